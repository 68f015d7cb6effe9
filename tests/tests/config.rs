//! `left4me-runtime config`: edits change only the edited value (parsed JSON and key
//! order compared), invalid edits leave the file byte-identical, concurrent edits never
//! tear the file or lose each other, and the helpers write what the runtime then runs.

use std::process::Output;

use left4me_runtime_tests::*;
use serde_json::{json, Value};

fn config(b: &Bundle, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(runtime_bin());
    cmd.arg("config").arg("--bundle").arg(&b.dir).args(args);
    run_captured(&mut cmd)
}

fn read(b: &Bundle) -> (String, Value) {
    let text = std::fs::read_to_string(b.dir.join("config.json")).unwrap();
    let v = serde_json::from_str(&text).unwrap();
    (text, v)
}

/// Keys of every object, depth first, in document order.
fn key_order(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                out.push(format!("{prefix}/{k}"));
                key_order(x, &format!("{prefix}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                key_order(x, &format!("{prefix}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A bundle whose config has fields no runtime knows, in an unsorted order, tab-indented
/// like runc's.
fn foreign_bundle() -> Bundle {
    let b = Bundle::new(&["true"]);
    let (text, _) = read(&b);
    // Re-serialise with vendor extensions inserted textually, so their order is ours.
    let text = text.replacen(
        "{",
        "{\n\"zz.vendor/first\": {\"y\": 1, \"b\": [3, 2, 1], \"a\": null},",
        1,
    );
    let text = text.replacen(
        "\"process\": {",
        "\"process\": {\n\"xVendorField\": \"keep me\",",
        1,
    );
    let reparsed: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    key_order(&reparsed, "", &mut out);
    assert!(out[0].ends_with("zz.vendor/first"));
    std::fs::write(b.dir.join("config.json"), text).unwrap();
    b
}

#[test]
fn an_edit_changes_only_the_edited_value() {
    if !can_run() {
        return;
    }
    let b = foreign_bundle();
    let (_, before) = read(&b);
    let mut keys_before = Vec::new();
    key_order(&before, "", &mut keys_before);
    ok(&config(
        &b,
        &["set", "process.args", r#"["sh","-c","exit 3"]"#],
    ));
    ok(&config(&b, &["set", "hostname", "edited", "--string"]));
    let (_, after) = read(&b);
    let mut expected = before.clone();
    expected["process"]["args"] = json!(["sh", "-c", "exit 3"]);
    expected["hostname"] = json!("edited");
    assert_eq!(after, expected);
    let mut keys_after = Vec::new();
    key_order(&after, "", &mut keys_after);
    assert_eq!(keys_after, keys_before, "key order changed");
    assert_eq!(
        after["zz.vendor/first"],
        json!({"y": 1, "b": [3, 2, 1], "a": null})
    );
    assert_eq!(after["process"]["xVendorField"], "keep me");
    // And the runtime runs what was written.
    let out = Runtime::new().run(&b, "cfg-edited");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn invalid_edits_leave_the_file_untouched() {
    if !can_run() {
        return;
    }
    let b = foreign_bundle();
    let (text, _) = read(&b);
    let cases: [(&[&str], &str); 6] = [
        (&["set", "process.args", "7"], "process.args"),
        (
            &["set", "linux.resources.cpu.cpus", r#""9-1""#],
            "linux.resources.cpu.cpus",
        ),
        (&["set", "root.path", r#""/nonexistent-root""#], "root.path"),
        (&["unset", "process.nope"], "not set"),
        (&["set", "process.args", "not json"], "--string"),
        (
            &["seccomp", "--profile", "/nonexistent/profile.json"],
            "/nonexistent/profile.json",
        ),
    ];
    for (args, needle) in cases {
        fails_with(&config(&b, args), needle);
        assert_eq!(read(&b).0, text, "{args:?} changed the file");
    }
    // validate lists every problem, one per line.
    let mut bad = b.config.clone();
    bad["linux"]["resources"] =
        json!({"cpu": {"cpus": "x"}, "pids": {"limit": 5}, "unified": {"cgroup.procs": "1"}});
    bad["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_NOTIFY"});
    std::fs::write(b.dir.join("config.json"), bad.to_string()).unwrap();
    let out = config(&b, &["validate"]);
    fails_with(&out, "2 problem(s) found");
    let listed = stdout(&out);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("linux.resources.cpu.cpus")),
        "{listed}"
    );
    assert!(
        listed.lines().any(|l| l.contains("SCMP_ACT_NOTIFY")),
        "{listed}"
    );
}

#[test]
fn helpers_write_what_the_runtime_runs() {
    if !can_run() {
        return;
    }
    let b =
        Bundle::shell("echo \"$FOO $BAR\"; cat /mnt/host/marker; grep Seccomp: /proc/self/status");
    let host = b.dir.join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("marker"), "marker\n").unwrap();
    let log = b.dir.join("poststop.log");
    ok(&config(&b, &["env", "set", "FOO=one"]));
    ok(&config(&b, &["env", "set", "BAR=two"]));
    ok(&config(&b, &["env", "set", "FOO=three"]));
    ok(&config(&b, &["env", "unset", "BAR"]));
    ok(&config(
        &b,
        &[
            "mount",
            "add",
            "--source",
            host.to_str().unwrap(),
            "--destination",
            "/mnt/host",
            "--options",
            "ro",
        ],
    ));
    ok(&config(
        &b,
        &[
            "mount",
            "add",
            "--source",
            "/tmp",
            "--destination",
            "/mnt/gone",
        ],
    ));
    ok(&config(
        &b,
        &["mount", "remove", "--destination", "/mnt/gone"],
    ));
    let script = format!("cat > {}", log.display());
    ok(&config(
        &b,
        &[
            "hook",
            "add",
            "--stage",
            "poststop",
            "--path",
            "/bin/sh",
            "--arg",
            "sh",
            "--arg",
            "-c",
            "--arg",
            &script,
            "--timeout",
            "10",
        ],
    ));
    ok(&config(
        &b,
        &[
            "hook",
            "add",
            "--stage",
            "poststart",
            "--path",
            "/bin/false",
        ],
    ));
    ok(&config(
        &b,
        &[
            "hook",
            "remove",
            "--stage",
            "poststart",
            "--path",
            "/bin/false",
        ],
    ));
    ok(&config(&b, &["seccomp", "--profile", "sandbox"]));
    ok(&config(&b, &["annotation", "set", "org.example.key", "v"]));
    ok(&config(&b, &["resources", "--pids", "0"]));
    let (_, doc) = read(&b);
    assert_eq!(doc["annotations"]["org.example.key"], "v");
    assert_eq!(
        ok(&config(&b, &["get", "annotations.\"org.example.key\""])).trim(),
        "\"v\""
    );
    assert_eq!(doc["hooks"]["poststart"], json!([]));
    assert!(doc["process"]["env"]
        .as_array()
        .unwrap()
        .contains(&json!("FOO=three")));
    let out = ok(&Runtime::new().run(&b, "cfg-helpers"));
    assert_eq!(out, "three \nmarker\nSeccomp:\t2\n");
    let state: Value = serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    assert_eq!(state["id"], "cfg-helpers");
    assert_eq!(state["status"], "stopped");
}

#[test]
fn dry_run_and_stdin_never_write() {
    if !can_run() {
        return;
    }
    let b = Bundle::new(&["true"]);
    let (text, _) = read(&b);
    let out = ok(&config(
        &b,
        &["--dry-run", "set", "hostname", "dry", "--string"],
    ));
    assert!(out.contains("\"hostname\": \"dry\""), "{out}");
    assert_eq!(read(&b).0, text);
    let mut cmd = std::process::Command::new(runtime_bin());
    cmd.args(["config", "--file", "-", "set", "hostname", "\"piped\""])
        .stdin(std::fs::File::open(b.dir.join("config.json")).unwrap());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let piped: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(piped["hostname"], "piped");
    assert_eq!(read(&b).0, text);
}

#[test]
fn concurrent_edits_neither_tear_nor_lose() {
    if !can_run() {
        return;
    }
    let b = std::sync::Arc::new(Bundle::new(&["true"]));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let text = std::fs::read_to_string(b.dir.join("config.json")).unwrap();
                serde_json::from_str::<Value>(&text).expect("a torn config.json");
                reads += 1;
            }
            reads
        })
    };
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let b = b.clone();
            std::thread::spawn(move || ok(&config(&b, &["env", "set", &format!("K{i}=v{i}")])))
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    let (_, doc) = read(&b);
    let env = doc["process"]["env"].as_array().unwrap();
    for i in 0..20 {
        assert!(
            env.contains(&json!(format!("K{i}=v{i}"))),
            "K{i} lost: {env:?}"
        );
    }
}

#[test]
fn layer_and_userns_helpers() {
    if !can_run() {
        return;
    }
    let b = Bundle::new(&["true"]);
    for l in ["installation", "overlays/1", "overlays/2"] {
        std::fs::create_dir_all(b.dir.join("store").join(l)).unwrap();
    }
    let layers = r#"{"store": "store", "allowedRoots": ["installation", "overlays"], "lower": [{"path": "installation"}]}"#;
    ok(&config(&b, &["set", "left4me.layers", layers]));
    ok(&config(&b, &["layer", "add", "overlays/1"]));
    ok(&config(
        &b,
        &["layer", "add", "overlays/2", "--position", "1"],
    ));
    let order = |b: &Bundle| -> Vec<String> {
        read(b).1["left4me"]["layers"]["lower"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(order(&b), ["overlays/1", "overlays/2", "installation"]);
    ok(&config(
        &b,
        &["layer", "move", "installation", "--position", "0"],
    ));
    assert_eq!(order(&b), ["installation", "overlays/1", "overlays/2"]);
    ok(&config(&b, &["layer", "remove", "overlays/1"]));
    assert_eq!(order(&b), ["installation", "overlays/2"]);
    // References are checked against the store: a missing layer is refused.
    fails_with(&config(&b, &["layer", "add", "overlays/9"]), "overlays/9");
    fails_with(&config(&b, &["layer", "add", "../etc"]), "..");
    assert_eq!(order(&b), ["installation", "overlays/2"]);
    ok(&config(
        &b,
        &[
            "userns",
            "--uid",
            "0:100000:65536",
            "--gid",
            "0:100000:65536",
        ],
    ));
    let (_, doc) = read(&b);
    assert_eq!(
        doc["linux"]["uidMappings"],
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}])
    );
    let user_ns = doc["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "user")
        .count();
    assert_eq!(user_ns, 1);
    fails_with(
        &config(&b, &["userns", "--uid", "0:1", "--gid", "0:1:1"]),
        "CONTAINER:HOST:SIZE",
    );
}

/// runc's `spec` output (runc 1.1.5, tab-indented) and the config.json podman 4.3 wrote
/// for a `run --rootfs` (compact), as generated on this project's machine.
#[test]
fn runc_and_podman_configs_keep_everything_but_the_edit() {
    if !can_run() {
        return;
    }
    for name in ["runc-spec", "podman-config"] {
        let fixture = workspace().join(format!("tests/fixtures/{name}.json"));
        let original = std::fs::read_to_string(&fixture).unwrap();
        let file = scratch().join(format!("cfg-{name}-{}.json", std::process::id()));
        std::fs::create_dir_all(scratch()).unwrap();
        std::fs::write(&file, &original).unwrap();
        let edit = |args: &[&str]| {
            let mut cmd = std::process::Command::new(runtime_bin());
            cmd.arg("config").arg("--file").arg(&file).args(args);
            ok(&run_captured(&mut cmd))
        };
        edit(&[
            "set",
            "process.args",
            r#"["srcds_run","-game","left4dead2"]"#,
        ]);
        edit(&["env", "set", "LEFT4ME=1"]);
        edit(&["annotation", "set", "org.left4me.cpuset", "auto"]);
        let before: Value = serde_json::from_str(&original).unwrap();
        let after: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut expected = before.clone();
        expected["process"]["args"] = json!(["srcds_run", "-game", "left4dead2"]);
        expected["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("LEFT4ME=1"));
        if expected.get("annotations").is_none() {
            expected["annotations"] = json!({});
        }
        expected["annotations"]["org.left4me.cpuset"] = json!("auto");
        assert_eq!(after, expected, "{name}");
        let (mut k_before, mut k_after) = (Vec::new(), Vec::new());
        key_order(&expected, "", &mut k_before);
        key_order(&after, "", &mut k_after);
        assert_eq!(k_after, k_before, "{name}: key order");
        if original.contains("\n\t") {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                text.contains("\n\t\"process\": {"),
                "{name}: indentation lost"
            );
        }
        std::fs::remove_file(&file).unwrap();
    }
}
