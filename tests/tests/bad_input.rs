//! The bad-input table of docs/security.md, case by case: each hostile or broken bundle
//! (or id) is refused with one line naming what is wrong, no panic, and nothing is left
//! behind (no state, no extra host mount).

use std::path::Path;

use left4me_runtime_tests::*;
use serde_json::{json, Value};

/// Runs `create` of a bundle edited by `edit` (and its rootfs by `prepare`), expects a
/// one-line refusal containing `needle`, and that nothing was left.
fn refused(
    id: &str,
    edit: impl FnOnce(&mut Value),
    prepare: impl FnOnce(&Path),
    needle: &str,
) -> String {
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    prepare(&b.rootfs());
    b.edit(edit);
    let mounts = host_mount_count();
    let err = fails_with(&rt.create(&b, id), needle);
    assert!(
        !err.contains("panicked"),
        "the runtime panicked on {id}: {err}"
    );
    assert!(rt.state(id).is_none(), "{id}: state left behind");
    assert!(!rt.root.join(id).exists(), "{id}: state directory left");
    assert_eq!(host_mount_count(), mounts, "{id}: host mounts changed");
    err
}

fn layered(lower: &str) -> impl FnOnce(&mut Value) + '_ {
    move |c: &mut Value| {
        c["left4me"] = json!({"layers": {
            "store": "/",
            "allowedRoots": ["usr"],
            "lower": [{"path": lower}]
        }});
    }
}

#[test]
fn layer_references_that_escape_are_refused() {
    if !can_run() {
        return;
    }
    refused(
        "bad-layer-abs",
        layered("/etc"),
        |_| {},
        "absolute paths are not allowed",
    );
    refused(
        "bad-layer-dotdot",
        layered("usr/../etc"),
        |_| {},
        "'..' components are not allowed",
    );
}

#[test]
fn proc_and_dev_that_are_symlinks_in_the_rootfs_are_refused() {
    if !can_run() {
        return;
    }
    let relink = |name: &'static str| {
        move |root: &Path| {
            std::fs::remove_dir_all(root.join(name)).ok();
            std::os::unix::fs::symlink("/etc", root.join(name)).unwrap();
        }
    };
    let err = refused(
        "bad-proc-link",
        |_| {},
        relink("proc"),
        "the proc mount's destination is a symlink",
    );
    assert!(err.contains("/proc"), "{err}");
    refused(
        "bad-dev-link",
        |_| {},
        relink("dev"),
        "the tmpfs mount's destination is a symlink",
    );
    refused(
        "bad-sys-link",
        |_| {},
        relink("sys"),
        "the sysfs mount's destination is a symlink",
    );
}

#[test]
fn huge_and_deeply_nested_configs_are_refused() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    // 17 MiB of valid JSON: refused by size before it is parsed.
    let mut huge = serde_json::to_string(&b.config).unwrap();
    huge.pop();
    huge.push_str(&format!(",\"pad\":\"{}\"}}", "x".repeat(17 << 20)));
    std::fs::write(b.dir.join("config.json"), &huge).unwrap();
    fails_with(&rt.create(&b, "bad-huge"), "at most 16 MiB");
    assert!(rt.state("bad-huge").is_none());
    // 100 000 nested arrays: serde's recursion limit, not a stack overflow.
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    std::fs::write(b.dir.join("config.json"), nested).unwrap();
    fails_with(&rt.create(&b, "bad-nested"), "recursion limit exceeded");
    assert!(rt.state("bad-nested").is_none());
}

#[test]
fn invalid_ids_are_refused_before_anything_is_read() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    let long = "a".repeat(1025);
    for id in ["../x", "a/b", "..", "", "x y", &long] {
        let err = fails_with(&rt.create(&b, id), "invalid container id");
        assert!(err.len() < 400, "the message repeats a huge id: {err}");
    }
    // The longest allowed id works end to end (state dir, cgroup, temp files).
    let longest = "b".repeat(200);
    ok(&rt.run(&b, &longest));
    assert!(rt.state(&longest).is_none());
}

#[test]
fn unknown_namespaces_and_negative_limits_are_refused() {
    if !can_run() {
        return;
    }
    refused(
        "bad-ns",
        |c| c["linux"]["namespaces"] = json!([{"type": "bogus"}]),
        |_| {},
        "bogus",
    );
    refused(
        "bad-memory",
        |c| c["linux"]["resources"] = json!({"memory": {"limit": -5}}),
        |_| {},
        "linux.resources.memory.limit",
    );
    refused(
        "bad-pids",
        |c| c["linux"]["resources"] = json!({"pids": {"limit": -7}}),
        |_| {},
        "linux.resources.pids.limit",
    );
}

#[test]
fn a_symlinked_config_json_is_refused() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    let real = b.dir.join("real.json");
    std::fs::rename(b.dir.join("config.json"), &real).unwrap();
    std::os::unix::fs::symlink(&real, b.dir.join("config.json")).unwrap();
    fails_with(&rt.create(&b, "bad-link"), "not a symlink");
}
