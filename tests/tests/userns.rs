//! Automatic user namespaces (`left4me.userns.auto`): each container id gets its own
//! 65 536-id block, disjoint from the others, the same one again on every run (so its
//! upper layer's ownership stays valid), also after the runtime was killed mid-create,
//! until `userns release`.

use std::process::{Command, Stdio};

use left4me_runtime_tests::*;
use serde_json::{json, Value};

/// A runtime whose block table lives in its own scratch file.
struct Blocks {
    rt: Runtime,
    file: std::path::PathBuf,
}

impl Blocks {
    fn new() -> Blocks {
        let rt = Runtime::new();
        let file = rt.root.with_extension("blocks.json");
        Blocks { rt, file }
    }

    fn command(&self) -> Command {
        let mut cmd = self.rt.command();
        cmd.arg("--id-blocks").arg(&self.file);
        cmd
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.command();
        cmd.args(args);
        run_captured(&mut cmd)
    }

    fn list(&self) -> Value {
        serde_json::from_str(&ok(&self.cmd(&["userns", "list", "--format", "json"]))).unwrap()
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(self.file.with_extension("lock"));
    }
}

/// A bundle on a one-layer stack (its busybox rootfs, idmapped onto the container's
/// block) that prints its uid_map and writes a file to its upper layer.
fn auto_bundle() -> Bundle {
    let mut b = Bundle::shell("cat /proc/self/uid_map; stat -c %u /bin/busybox; touch /mark");
    let store = b.dir.join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::rename(b.rootfs(), store.join("installation")).unwrap();
    std::fs::create_dir(b.rootfs()).unwrap();
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        c["left4me"] = json!({
            "userns": { "auto": true },
            "layers": {
                "store": "store",
                "lower": [{ "path": "installation", "idmapToContainer": true }],
                "readonly": false
            }
        });
    });
    b
}

fn block_of(output: &str) -> u32 {
    let fields: Vec<&str> = output.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(fields[0], "0", "{output}");
    assert_eq!(fields[2], "65536", "{output}");
    fields[1].parse().unwrap()
}

#[test]
fn containers_get_disjoint_stable_blocks_until_released() {
    if !can_run() {
        return;
    }
    let blocks = Blocks::new();
    let (a, b) = (auto_bundle(), auto_bundle());
    let run = |bundle: &Bundle, id: &str| {
        let dir = bundle.dir.to_str().unwrap();
        ok(&blocks.cmd(&["run", "--bundle", dir, id]))
    };
    let out_a = run(&a, "autons-a");
    let block_a = block_of(&out_a);
    assert_eq!(block_a, 1_000_000, "first fit from the default range start");
    assert_eq!(
        out_a.lines().nth(1),
        Some("0"),
        "the layer is idmapped onto the block"
    );
    let block_b = block_of(&run(&b, "autons-b"));
    assert!(
        block_b >= block_a + 65536 || block_b + 65536 <= block_a,
        "blocks overlap"
    );
    // Same id, same block: the upper layer written by the first run stays its own.
    assert_eq!(block_of(&run(&a, "autons-a")), block_a);
    let mark = std::fs::metadata(a.dir.join("upper/mark")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&mark), block_a);
    let list = blocks.list();
    assert_eq!(list["autons-a"], block_a);
    assert_eq!(list["autons-b"], block_b);
    ok(&blocks.cmd(&["userns", "release", "autons-a"]));
    assert!(blocks.list().get("autons-a").is_none());
    // The freed block is the first fit again.
    let c = auto_bundle();
    assert_eq!(block_of(&run(&c, "autons-c")), block_a);
}

#[test]
fn a_block_survives_a_runtime_killed_mid_create() {
    if !can_run() {
        return;
    }
    let blocks = Blocks::new();
    for (i, delay_ms) in [0u64, 2, 5, 10, 20].into_iter().enumerate() {
        // One bundle per id: an upper layer belongs to its container's block.
        let b = auto_bundle();
        let dir = b.dir.to_str().unwrap().to_string();
        let id = format!("autons-kill{i}");
        let mut child = blocks
            .command()
            .args(["create", "--bundle", &dir, &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        ok(&blocks.cmd(&["delete", "--force", &id]));
        let recorded = blocks.list().get(&id).and_then(Value::as_u64);
        let out = ok(&blocks.cmd(&["run", "--bundle", &dir, &id]));
        if let Some(start) = recorded {
            assert_eq!(u64::from(block_of(&out)), start, "{id}: block changed");
        }
        // Whatever happened, the table is whole JSON and the id now has one block.
        assert_eq!(blocks.list()[&id].as_u64(), Some(u64::from(block_of(&out))));
    }
    let starts: Vec<u64> = blocks
        .list()
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut unique = starts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        starts.len(),
        "two ids share a block: {starts:?}"
    );
}

#[test]
fn auto_conflicts_with_explicit_mappings() {
    if !can_run() {
        return;
    }
    let blocks = Blocks::new();
    let mut b = auto_bundle();
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let dir = b.dir.to_str().unwrap();
    fails_with(
        &blocks.cmd(&["run", "--bundle", dir, "autons-conflict"]),
        "left4me.userns.auto",
    );
}

#[test]
fn a_single_container_uid_can_be_the_host_service_uid() {
    // srcds runs as container uid 980 = host uid 980 (`left4me`), so uid-based firewall
    // marking keeps working, while every other container id is shifted into a private
    // range. The layer is idmapped with the same ranges, so on-disk owners read the same
    // inside, and its copy-ups land in the upper layer owned by host uid 980.
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::shell(
        "id -u; stat -c %u /game/server.cfg; echo changed >> /game/server.cfg; \
         touch /game/new; cat /proc/self/uid_map",
    );
    let store = b.dir.join("store");
    std::fs::create_dir(&store).unwrap();
    let installation = store.join("installation");
    std::fs::rename(b.rootfs(), &installation).unwrap();
    std::fs::create_dir(b.rootfs()).unwrap();
    std::fs::create_dir(installation.join("game")).unwrap();
    std::fs::write(installation.join("game/server.cfg"), "cfg\n").unwrap();
    std::os::unix::fs::chown(installation.join("game"), Some(980), Some(980)).unwrap();
    std::os::unix::fs::chown(installation.join("game/server.cfg"), Some(980), Some(980)).unwrap();
    let maps = json!([
        {"containerID": 0, "hostID": 1_000_000, "size": 980},
        {"containerID": 980, "hostID": 980, "size": 1},
        {"containerID": 981, "hostID": 1_000_981, "size": 64555}
    ]);
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        c["process"]["user"] = json!({"uid": 980, "gid": 980});
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = maps.clone();
        c["linux"]["gidMappings"] = maps.clone();
        c["left4me"] = json!({"layers": {
            "store": "store",
            "lower": [{"path": "installation", "uidMappings": maps, "gidMappings": maps}]
        }});
    });
    let out = ok(&rt.run(&b, "autons-980"));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("980"));
    assert_eq!(lines.next(), Some("980"), "the layer's 980 reads as 980");
    let owner = |p: &str| {
        let m = std::fs::metadata(b.dir.join("upper").join(p)).unwrap();
        use std::os::unix::fs::MetadataExt;
        (m.uid(), m.gid())
    };
    assert_eq!(
        owner("game/server.cfg"),
        (980, 980),
        "copy-up owned by host 980"
    );
    assert_eq!(owner("game/new"), (980, 980), "new files owned by host 980");
    assert_eq!(
        owner(""),
        (980, 980),
        "the upper layer belongs to the service uid"
    );
    assert_eq!(
        std::fs::read_to_string(installation.join("game/server.cfg")).unwrap(),
        "cfg\n",
        "the layer is untouched"
    );
}
