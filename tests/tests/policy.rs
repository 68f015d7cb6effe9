//! The policy: the trust boundary for bundles that less trusted users write (left4me's
//! web app, uid 980, writes its instances' config.json). A root-owned policy file names
//! bundle directories (scopes) and what bundles there may ask for; `create`/`run` of a
//! governed bundle that asks for more is refused before anything exists, with every
//! violation on one line, and `policy check` shows the verdict.
//!
//! Each test writes its own policy under /run/l4m-policy-tests/PID-N/ (a policy must sit
//! in directories only root can write: never under /tmp) with a scope naming its own
//! bundle directories. Most rules are tested twice: a bundle that breaks the rule is
//! refused and names the field, a bundle within it runs. Limits whose cgroup controller
//! the host lacks (the development host is hybrid v1) are shown allowed with `policy
//! check` there and run in the Debian 13 VM.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use left4me_runtime_tests::*;
use serde_json::{json, Value};

const POLICY_BASE: &str = "/run/l4m-policy-tests";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

/// A policy file only root can have written: `/run/l4m-policy-tests/PID-N/policy.json`
/// (directories 0755, file 0644, all root's). Removed with its directory when dropped.
struct PolicyFile {
    dir: PathBuf,
    path: PathBuf,
}

impl PolicyFile {
    fn new(doc: &Value) -> PolicyFile {
        let base = Path::new(POLICY_BASE);
        let dir = base.join(unique("p"));
        // Another test may remove the (empty) base between the two calls.
        let mut made = Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        for _ in 0..10 {
            let _ = std::fs::create_dir(base);
            made = std::fs::create_dir(&dir);
            if made.is_ok() {
                break;
            }
        }
        made.unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        chmod(base, 0o755);
        chmod(&dir, 0o755);
        let path = dir.join("policy.json");
        std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        chmod(&path, 0o644);
        PolicyFile { dir, path }
    }

    fn scopes(scopes: Vec<Value>) -> PolicyFile {
        PolicyFile::new(&json!({ "scopes": scopes }))
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir(POLICY_BASE);
    }
}

/// A scope named "tests" for `bundles`, with the restrictive defaults, the process
/// allowed to run as host uid/gid 1000, and the fields of `extra` over that.
fn scope(bundles: &[&Path], extra: Value) -> Value {
    let mut s = json!({
        "name": "tests",
        "bundles": bundles,
        "user": {"hostIds": [{"start": 1000}]},
    });
    for (k, v) in extra.as_object().expect("extra is an object") {
        s[k] = v.clone();
    }
    s
}

/// A policy whose one scope governs `b` (its directory).
fn policy_for(b: &Bundle, extra: Value) -> PolicyFile {
    PolicyFile::scopes(vec![scope(&[&b.dir], extra)])
}

/// A bundle within the restrictive defaults: runc's spec run as uid/gid 1000 without
/// capabilities (NNP, new namespaces, runc's masked paths, no binds, no hooks).
fn confined(args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["capabilities"] = json!({});
    });
    b
}

/// The runtime with `--policy POLICY` before `args`.
fn under(rt: &Runtime, policy: &Path, args: &[&str]) -> Output {
    let mut cmd = rt.command();
    cmd.arg("--policy").arg(policy).args(args);
    run_captured(&mut cmd)
}

fn run_under(rt: &Runtime, p: &PolicyFile, b: &Bundle, id: &str) -> Output {
    under(
        rt,
        &p.path,
        &["run", "--bundle", b.dir.to_str().unwrap(), id],
    )
}

/// `policy check --bundle DIR`, under `policy` (or none: no --policy).
fn check(policy: Option<&Path>, dir: &Path) -> Output {
    let mut cmd = Command::new(runtime_bin());
    if let Some(p) = policy {
        cmd.arg("--policy").arg(p);
    }
    cmd.args(["policy", "check", "--bundle"]).arg(dir);
    run_captured(&mut cmd)
}

/// Asserts `out` is the policy's refusal: one line naming the policy file, with the
/// violation count matching the violations listed and each of `needles` among them.
/// Returns the count.
#[track_caller]
fn refusal(out: &Output, policy: &Path, scope_name: &str, needles: &[&str]) -> usize {
    let err = fails_with(
        out,
        &format!(
            "refused by policy {} (scope {scope_name:?}), ",
            policy.display()
        ),
    );
    assert!(stdout(out).is_empty(), "the container ran: {}", stdout(out));
    let (head, list) = err
        .trim_end()
        .split_once(" violation(s): ")
        .unwrap_or_else(|| panic!("no violation count: {err}"));
    let n: usize = head
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no violation count: {err}"));
    assert_eq!(
        list.matches(", the policy allows ").count(),
        n,
        "the count does not match the list: {err}"
    );
    for needle in needles {
        assert!(list.contains(needle), "{needle:?} missing: {err}");
    }
    n
}

/// Runs `b` under `p` and asserts the refusal (see [`refusal`]) and that the container
/// left no state behind; returns the violation count.
#[track_caller]
fn refuses(rt: &Runtime, p: &PolicyFile, b: &Bundle, needles: &[&str]) -> usize {
    let id = unique("refused");
    let n = refusal(&run_under(rt, p, b, &id), &p.path, "tests", needles);
    assert!(
        !rt.root.join(&id).exists(),
        "a refused container left its state directory"
    );
    n
}

/// Runs `b` under `p`; asserts it ran and returns its stdout.
#[track_caller]
fn runs(rt: &Runtime, p: &PolicyFile, b: &Bundle) -> String {
    let out = run_under(rt, p, b, &unique("allowed"));
    let text = ok(&out);
    assert!(
        !stderr(&out).contains("no policy in force"),
        "{}",
        stderr(&out)
    );
    text
}

/// `policy check` of `dir` under `p` says ALLOWED (exit 0) for scope `scope_name`.
#[track_caller]
fn check_allows(p: &Path, dir: &Path, scope_name: &str) -> String {
    let out = check(Some(p), dir);
    let text = ok(&out);
    let verdict = format!(
        "policy        {} scope {scope_name:?}: ALLOWED",
        p.display()
    );
    assert!(
        text.lines().any(|l| l == verdict),
        "{verdict:?} missing:\n{text}"
    );
    assert!(!text.contains("  - "), "{text}");
    text
}

/// The controllers the cgroup2 hierarchy offers (empty on the hybrid host).
fn controllers() -> String {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .find_map(|m| std::fs::read_to_string(Path::new(m).join("cgroup.controllers")).ok())
        .unwrap_or_default()
}

/// Memory, pids and cpu limits can be enforced here (the VM, not the hybrid host).
fn limits_enforced() -> bool {
    let text = controllers();
    let have: Vec<&str> = text.split_whitespace().collect();
    ["memory", "pids", "cpu"].iter().all(|c| have.contains(c))
}

/// The cgroup2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on the hybrid host).
fn cgroup2_mount() -> PathBuf {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|m| m.join("cgroup.procs").exists())
        .expect("a cgroup2 mount")
}

/// Cgroup directories (any hierarchy, a few levels deep) whose name contains `needle`.
fn cgroups_named(needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name().to_string_lossy().contains(needle) {
                found.push(e.path());
            }
            if depth < 6 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    found
}

fn remove_namespace(c: &mut Value, kind: &str) {
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != kind);
}

fn set_namespace(c: &mut Value, ns: Value) {
    remove_namespace(c, ns["type"].as_str().unwrap());
    c["linux"]["namespaces"].as_array_mut().unwrap().push(ns);
}

fn push_mount(c: &mut Value, m: Value) {
    c["mounts"].as_array_mut().unwrap().push(m);
}

/// The index a mount pushed onto runc's default mounts gets.
const NEXT_MOUNT: usize = 7;

/// A shipped seccomp profile (bundles/seccomp/NAME.json).
fn shipped_profile(name: &str) -> Value {
    let path = workspace().join(format!("bundles/seccomp/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The shipped policy (bundles/policy/left4me.json).
fn shipped_policy() -> Value {
    let path = workspace().join("bundles/policy/left4me.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------
// One rule at a time.

#[test]
fn capabilities_beyond_the_scope_are_refused_and_those_within_it_run() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["sh", "-c", "grep CapBnd /proc/self/status"]);
    let p = policy_for(&b, json!({"capabilities": ["CAP_KILL"]}));
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = json!(["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        }
    });
    let n = refuses(
        &rt,
        &p,
        &b,
        &[
            "process.capabilities.bounding: asks CAP_NET_BIND_SERVICE, the policy allows CAP_KILL",
            "process.capabilities.effective: asks CAP_NET_BIND_SERVICE",
            "process.capabilities.permitted: asks CAP_NET_BIND_SERVICE",
        ],
    );
    assert_eq!(n, 3);
    // A set the process does not even use counts too.
    b.edit(|c| {
        c["process"]["capabilities"] =
            json!({"bounding": ["CAP_KILL"], "inheritable": ["CAP_SYS_ADMIN"]});
    });
    let n = refuses(
        &rt,
        &p,
        &b,
        &["process.capabilities.inheritable: asks CAP_SYS_ADMIN"],
    );
    assert_eq!(n, 1);
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = json!(["CAP_KILL"]);
        }
        c["process"]["capabilities"]
            .as_object_mut()
            .unwrap()
            .remove("inheritable");
    });
    // CAP_KILL is bit 5.
    assert_eq!(runs(&rt, &p, &b).trim(), "CapBnd:\t0000000000000020");
}

#[test]
fn no_new_privileges_is_required_unless_the_scope_waives_it() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["sh", "-c", "grep NoNewPrivs /proc/self/status"]);
    let p = policy_for(&b, json!({}));
    b.edit(|c| c["process"]["noNewPrivileges"] = json!(false));
    let n = refuses(
        &rt,
        &p,
        &b,
        &["process.noNewPrivileges: asks false, the policy allows true only"],
    );
    assert_eq!(n, 1);
    b.edit(|c| {
        c["process"]
            .as_object_mut()
            .unwrap()
            .remove("noNewPrivileges");
    });
    refuses(&rt, &p, &b, &["process.noNewPrivileges: asks null"]);
    let waived = policy_for(&b, json!({"noNewPrivileges": false}));
    assert_eq!(runs(&rt, &waived, &b).trim(), "NoNewPrivs:\t0");
    b.edit(|c| c["process"]["noNewPrivileges"] = json!(true));
    assert_eq!(runs(&rt, &p, &b).trim(), "NoNewPrivs:\t1");
}

#[test]
fn without_a_user_namespace_the_process_ids_must_be_host_ids_the_scope_allows() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["sh", "-c", "echo $(id -u) $(id -g) $(id -G)"]);
    let p = policy_for(
        &b,
        json!({"user": {"hostIds": [{"start": 1000, "size": 10}]}}),
    );
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 0, "gid": 2000, "additionalGids": [1005, 0]});
    });
    let n = refuses(
        &rt,
        &p,
        &b,
        &[
            "process.user.uid: asks 0, the policy allows host ids 1000-1009",
            "process.user.gid: asks 2000, the policy allows host ids 1000-1009",
            "process.user.additionalGids: asks 0, the policy allows host ids 1000-1009",
        ],
    );
    assert_eq!(n, 3);
    // One past the range.
    b.edit(|c| c["process"]["user"] = json!({"uid": 1010, "gid": 1000}));
    assert_eq!(refuses(&rt, &p, &b, &["process.user.uid: asks 1010"]), 1);
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 1001, "gid": 1002, "additionalGids": [1009]});
    });
    let out = runs(&rt, &p, &b);
    assert!(out.starts_with("1001 1002 "), "{out}");
    assert!(out.trim().ends_with("1009"), "{out}");
}

#[test]
fn user_namespace_mappings_must_land_on_allowed_host_ids_and_never_on_host_root() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["sh", "-c", "cat /proc/self/uid_map; id -u"]);
    let p = policy_for(
        &b,
        json!({"user": {"hostIds": [{"start": 200000, "size": 65536}]}}),
    );
    let inside = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    let with_maps = |c: &mut Value, uids: Value, gids: Value| {
        set_namespace(c, json!({"type": "user"}));
        c["linux"]["uidMappings"] = uids;
        c["linux"]["gidMappings"] = gids;
    };
    b.edit(|c| {
        with_maps(
            c,
            json!([{"containerID": 0, "hostID": 300000, "size": 65536}]),
            inside.clone(),
        )
    });
    let n = refuses(
        &rt,
        &p,
        &b,
        &["linux.uidMappings[0]: asks host ids 300000+65536, the policy allows host ids 200000-265535"],
    );
    assert_eq!(n, 1);
    // Starting inside but running past the end.
    b.edit(|c| {
        with_maps(
            c,
            inside.clone(),
            json!([{"containerID": 0, "hostID": 200001, "size": 65536}]),
        )
    });
    assert_eq!(
        refuses(
            &rt,
            &p,
            &b,
            &["linux.gidMappings[0]: asks host ids 200001+65536"]
        ),
        1
    );
    // Host root mapped in (container root = host root).
    let root_in = json!([
        {"containerID": 0, "hostID": 0, "size": 1},
        {"containerID": 1, "hostID": 200001, "size": 65535}
    ]);
    b.edit(|c| with_maps(c, root_in.clone(), root_in.clone()));
    let n = refuses(
        &rt,
        &p,
        &b,
        &[
            "linux.uidMappings[0]: asks host ids 0+1",
            "linux.gidMappings[0]: asks host ids 0+1",
        ],
    );
    assert_eq!(n, 2);
    // Within the range: runs, and the container's uid 1000 (not a host id the scope
    // lists) is fine, since it maps to host 201000.
    b.edit(|c| with_maps(c, inside.clone(), inside.clone()));
    let out = runs(&rt, &p, &b);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields, ["0", "200000", "65536", "1000"], "{out}");
}

#[test]
fn namespaces_must_be_new_and_only_listed_ones_may_be_the_hosts() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["readlink", "/proc/self/ns/net"]);
    let p = policy_for(&b, json!({}));
    let base = b.config.clone();
    // The new ones of runc's spec run.
    let own_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let net = runs(&rt, &p, &b);
    assert_ne!(net.trim(), own_net.to_str().unwrap());

    b.edit(|c| remove_namespace(c, "pid"));
    let n = refuses(
        &rt,
        &p,
        &b,
        &["linux.namespaces: asks the host's pid namespace, the policy allows a new pid namespace"],
    );
    assert_eq!(n, 1);

    let ipc = format!("/proc/{}/ns/ipc", std::process::id());
    b.config = base.clone();
    b.edit(|c| set_namespace(c, json!({"type": "ipc", "path": ipc})));
    let n = refuses(
        &rt,
        &p,
        &b,
        &[&format!(
            "linux.namespaces[ipc].path: asks joining {ipc}, the policy allows new namespaces only"
        )],
    );
    assert_eq!(n, 1);

    b.config = base.clone();
    b.edit(|c| remove_namespace(c, "network"));
    let n = refuses(
        &rt,
        &p,
        &b,
        &["linux.namespaces: asks the host's network namespace, the policy allows host namespaces: none"],
    );
    assert_eq!(n, 1);
    // Listed: the container shares the host's network namespace.
    let host_net = policy_for(&b, json!({"hostNamespaces": ["network"]}));
    assert_eq!(runs(&rt, &host_net, &b).trim(), own_net.to_str().unwrap());
    // Listed as the host's, but joined by path: still refused.
    b.edit(|c| set_namespace(c, json!({"type": "network", "path": "/proc/1/ns/net"})));
    let n = refuses(
        &rt,
        &host_net,
        &b,
        &["linux.namespaces[network].path: asks joining /proc/1/ns/net"],
    );
    assert_eq!(n, 1);

    // A scope requiring a user namespace refuses a bundle without one.
    b.config = base.clone();
    b.save();
    let userns = policy_for(
        &b,
        json!({"user": {"namespaceRequired": true, "hostIds": [{"start": 1000}]}}),
    );
    let n = refuses(
        &rt,
        &userns,
        &b,
        &["linux.namespaces: asks the host's user namespace, the policy allows a new user namespace"],
    );
    assert_eq!(n, 1);
}

#[test]
fn bind_mounts_come_only_from_listed_sources_and_read_only_unless_writable() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["sh", "-c", "cat /src/hello && echo w > /rw/written"]);
    // The sources sit in the bundle directory (removed with it, the link as a link).
    let (src, rw, link) = (b.dir.join("ro"), b.dir.join("rw"), b.dir.join("link"));
    for d in [&src, &rw] {
        std::fs::create_dir_all(d).unwrap();
    }
    chmod(&rw, 0o777);
    std::fs::write(src.join("hello"), "hello\n").unwrap();
    std::os::unix::fs::symlink("/", &link).unwrap();
    let p = policy_for(
        &b,
        json!({"bindSources": [{"path": src}, {"path": rw, "writable": true}]}),
    );
    let base = b.config.clone();
    let with = |b: &mut Bundle, mounts: &[Value]| {
        b.config = base.clone();
        b.edit(|c| {
            for m in mounts {
                push_mount(c, m.clone());
            }
        });
    };
    let bind = |dest: &str, source: &Path, options: &[&str]| json!({"destination": dest, "type": "bind", "source": source, "options": options});
    let rw_mount = bind("/rw", &rw, &["bind", "rw"]);
    let allowed = format!("{} (ro), {} (rw)", src.display(), rw.display());

    // The host's root, directly, through a symlink, through "..", or typed "none".
    with(&mut b, &[bind("/host", Path::new("/"), &["rbind", "rro"])]);
    let f = format!("mounts[{NEXT_MOUNT}]");
    let n = refuses(
        &rt,
        &p,
        &b,
        &[&format!("{f}.source: asks /, the policy allows {allowed}")],
    );
    assert_eq!(n, 1);
    with(&mut b, &[bind("/host", &link, &["rbind", "rro"])]);
    refuses(
        &rt,
        &p,
        &b,
        &[&format!(
            "{f}.source: asks {} (resolves to /)",
            link.display()
        )],
    );
    let dotdot = src.join("../..");
    with(&mut b, &[bind("/host", &dotdot, &["rbind", "rro"])]);
    refuses(
        &rt,
        &p,
        &b,
        &[&format!("{f}.source: asks {}", dotdot.display())],
    );
    with(
        &mut b,
        &[
            json!({"destination": "/host", "type": "none", "source": "/", "options": ["rbind", "rro"]}),
        ],
    );
    refuses(&rt, &p, &b, &[&format!("{f}.source: asks /,")]);
    // Relative to the bundle: not a listed source either.
    with(
        &mut b,
        &[bind("/host", Path::new("rootfs"), &["bind", "ro"])],
    );
    refuses(
        &rt,
        &p,
        &b,
        &[&format!(
            "{f}.source: asks \"rootfs\" (relative to the bundle)"
        )],
    );

    // A read-only source mounted writable, or read-only only at the top of an rbind.
    let ro_needed = format!("the policy allows {} read-only", src.display());
    for options in [&["bind"][..], &["bind", "rw"], &["bind", "ro", "rw"]] {
        with(&mut b, &[bind("/src", &src, options), rw_mount.clone()]);
        let n = refuses(
            &rt,
            &p,
            &b,
            &[&format!(
                "{f}.options: asks a writable bind of {}, {ro_needed}",
                src.display()
            )],
        );
        assert_eq!(n, 1, "{options:?}");
    }
    with(
        &mut b,
        &[bind("/src", &src, &["rbind", "ro"]), rw_mount.clone()],
    );
    refuses(
        &rt,
        &p,
        &b,
        &[&format!(
            "{f}.options: asks an rbind read-only only at its top (use rro) of {}",
            src.display()
        )],
    );

    // Within the rules: read-only binds (bind+ro, rbind+rro) and a writable one.
    for options in [&["bind", "ro"][..], &["rbind", "rro"]] {
        with(&mut b, &[bind("/src", &src, options), rw_mount.clone()]);
        assert_eq!(runs(&rt, &p, &b), "hello\n", "{options:?}");
        assert_eq!(std::fs::read_to_string(rw.join("written")).unwrap(), "w\n");
        std::fs::remove_file(rw.join("written")).unwrap();
    }
}

/// `rro` makes the whole tree read-only, but a top-level `rw` beside it (before or
/// after: the runtime applies the recursive attributes first, then the top's) leaves the
/// mount itself writable. The policy must not take such a bind for read-only.
#[test]
fn a_top_level_rw_beside_rro_is_a_writable_bind() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["sh", "-c", "echo pwned > /src/written; cat /src/written"]);
    let src = b.dir.join("ro");
    std::fs::create_dir_all(&src).unwrap();
    chmod(&src, 0o777);
    let p = policy_for(&b, json!({"bindSources": [{"path": src}]}));
    let base = b.config.clone();
    for options in [
        &["rbind", "rro", "rw"][..],
        &["rbind", "rw", "rro"],
        &["bind", "rro", "rw"],
    ] {
        b.config = base.clone();
        b.edit(|c| {
            push_mount(
                c,
                json!({"destination": "/src", "type": "bind", "source": src, "options": options}),
            )
        });
        let out = run_under(&rt, &p, &b, &unique("rro-rw"));
        let written = std::fs::read_to_string(src.join("written")).ok();
        let _ = std::fs::remove_file(src.join("written"));
        assert_eq!(
            written,
            None,
            "{options:?}: a source the policy allows read-only only was written through \
             the bind: stdout {:?} stderr {:?}",
            stdout(&out),
            stderr(&out)
        );
        refusal(
            &out,
            &p.path,
            "tests",
            &[&format!(
                "mounts[{NEXT_MOUNT}].options: asks a writable bind"
            )],
        );
    }
}

#[test]
fn filesystem_types_beyond_the_kernels_own_need_the_scope_to_list_them() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&[
        "sh",
        "-c",
        "grep ' /scratch ' /proc/self/mounts | cut -d' ' -f3",
    ]);
    let p = policy_for(&b, json!({}));
    let base = b.config.clone();
    let f = format!("mounts[{NEXT_MOUNT}].type");
    for (kind, source, options) in [
        ("ext4", "/dev/sda1", json!(["ro"])),
        (
            "overlay",
            "overlay",
            json!(["lowerdir=/tmp,upperdir=/tmp/u,workdir=/tmp/w"]),
        ),
        ("ramfs", "ramfs", json!([])),
    ] {
        b.config = base.clone();
        b.edit(|c| {
            push_mount(
                c,
                json!({"destination": "/scratch", "type": kind, "source": source, "options": options}),
            )
        });
        let n = refuses(
            &rt,
            &p,
            &b,
            &[&format!(
                "{f}: asks {kind:?}, the policy allows proc, sysfs, tmpfs, devpts, mqueue, cgroup, cgroup2"
            )],
        );
        assert_eq!(n, 1, "{kind}");
    }
    // Listed: allowed (ramfs runs; overlay is only checked).
    let listed = policy_for(&b, json!({"filesystems": ["ramfs", "overlay"]}));
    assert_eq!(runs(&rt, &listed, &b).trim(), "ramfs");
    b.config = base.clone();
    b.edit(|c| {
        push_mount(
            c,
            json!({"destination": "/scratch", "type": "overlay", "source": "overlay",
                   "options": ["lowerdir=/a:/b"]}),
        )
    });
    check_allows(&listed.path, &b.dir, "tests");
}

#[test]
fn the_root_must_be_a_directory_inside_the_bundle() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["echo", "ok"]);
    let p = policy_for(&b, json!({}));
    std::os::unix::fs::symlink("rootfs", b.dir.join("rootlink")).unwrap();
    std::os::unix::fs::symlink("/", b.dir.join("host")).unwrap();
    std::fs::create_dir(b.dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("/", b.dir.join("sub/up")).unwrap();
    for path in ["/", "rootfs/../rootfs", "rootfs/../../"] {
        b.edit(|c| c["root"]["path"] = json!(path));
        let n = refuses(
            &rt,
            &p,
            &b,
            &[&format!(
                "root.path: asks {path:?}, the policy allows a directory inside the bundle"
            )],
        );
        assert_eq!(n, 1, "{path}");
    }
    // Symlinks: at the end, in the middle, or behind a trailing "." component.
    for path in ["rootlink", "host/.", "sub/up/usr"] {
        b.edit(|c| c["root"]["path"] = json!(path));
        let out = run_under(&rt, &p, &b, &unique("rootpath"));
        if out.status.success() {
            panic!("root.path {path:?} ran: {}", stdout(&out));
        }
        let err = stderr(&out);
        assert!(
            err.contains("refused by policy") && err.contains(&format!("root.path: asks {path:?}")),
            "{path}: {err}"
        );
    }
    b.edit(|c| c["root"]["path"] = json!("rootfs"));
    assert_eq!(runs(&rt, &p, &b), "ok\n");
    for link in ["rootlink", "host", "sub/up"] {
        std::fs::remove_file(b.dir.join(link)).unwrap();
    }
}

#[test]
fn hooks_must_be_listed_and_root_owned() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["echo", "ok"]);
    // The hooks live beside the policy, in directories only root can write.
    let p = policy_for(&b, json!({}));
    let hook = p.dir.join("hook");
    let foreign = p.dir.join("hook-1234");
    let loose = p.dir.join("hook-0775");
    let ran = p.dir.join("ran");
    let script = format!("#!/bin/sh\ncat >/dev/null\necho ran >> {}\n", ran.display());
    for h in [&hook, &foreign, &loose] {
        std::fs::write(h, &script).unwrap();
        chmod(h, 0o755);
    }
    chown(&foreign, 1234);
    chmod(&loose, 0o775);
    // Rewrite the policy in place (same file, same directory).
    let doc = json!({"scopes": [scope(&[&b.dir], json!({"hooks": [hook, foreign, loose]}))]});
    std::fs::write(&p.path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    let with_hook = |b: &mut Bundle, path: &Path| {
        b.edit(|c| c["hooks"] = json!({"createRuntime": [{"path": path}]}));
    };
    with_hook(&mut b, Path::new("/tmp/x"));
    let n = refuses(
        &rt,
        &p,
        &b,
        &[&format!(
            "hooks.createRuntime[0].path: asks /tmp/x, the policy allows {}, {}, {}",
            hook.display(),
            foreign.display(),
            loose.display()
        )],
    );
    assert_eq!(n, 1);
    for (h, why) in [
        (&foreign, "is not root's alone"),
        (&loose, "is not root's alone"),
    ] {
        with_hook(&mut b, h);
        refuses(
            &rt,
            &p,
            &b,
            &[&format!(
                "hooks.createRuntime[0].path: asks {} ({} {why}), the policy allows root-owned hooks",
                h.display(),
                h.display()
            )],
        );
    }
    // Paths that reach a listed hook only once resolved, or relative to the runtime's
    // working directory, are not the listed path: refused as such, never resolved.
    let dotdot = p.dir.join("elsewhere/../hook");
    for escape in [dotdot.as_path(), Path::new("hook")] {
        with_hook(&mut b, escape);
        let needle = format!(
            "hooks.createRuntime[0].path: asks {}, the policy allows {}",
            escape.display(),
            hook.display()
        );
        refuses(&rt, &p, &b, &[&needle]);
    }
    assert!(!ran.exists(), "a refused hook ran");
    with_hook(&mut b, &hook);
    assert_eq!(runs(&rt, &p, &b), "ok\n");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "ran\n");
}

#[test]
fn resource_ceilings_require_limits_at_most_the_scopes() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let script = "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max \
                  /sys/fs/cgroup/memory.high";
    let mut b = confined(&["sh", "-c", script]);
    let p = policy_for(
        &b,
        json!({"resources": {"memory": 134217728, "pids": 64, "cpuPercent": 50,
                             "unified": ["memory.high"]}}),
    );
    let base = b.config.clone();
    let n = refuses(
        &rt,
        &p,
        &b,
        &[
            "linux.resources.memory.limit: asks no limit, the policy allows at most 134217728",
            "linux.resources.pids.limit: asks no limit, the policy allows at most 64",
            "linux.resources.cpu.quota: asks no limit, the policy allows at most 50%",
        ],
    );
    assert_eq!(n, 3);
    let set = |b: &mut Bundle, r: Value| {
        b.config = base.clone();
        b.edit(|c| {
            for (k, v) in r.as_object().unwrap() {
                c["linux"]["resources"][k] = v.clone();
            }
        });
    };
    set(
        &mut b,
        json!({"memory": {"limit": 268435456}, "pids": {"limit": 100},
               "cpu": {"quota": 100000, "period": 100000}}),
    );
    let n = refuses(
        &rt,
        &p,
        &b,
        &[
            "linux.resources.memory.limit: asks 268435456",
            "linux.resources.pids.limit: asks 100",
            "linux.resources.cpu.quota: asks 100% of a CPU, the policy allows at most 50%",
        ],
    );
    assert_eq!(n, 3);
    let within = json!({"memory": {"limit": 67108864}, "pids": {"limit": 32},
                        "cpu": {"quota": 50000, "period": 100000}});
    let mut unified = within.clone();
    unified["unified"] = json!({"pids.max": "1000", "memory.high": "max"});
    set(&mut b, unified);
    let n = refuses(
        &rt,
        &p,
        &b,
        &[
            "linux.resources.unified.pids.max: asks \"1000\", the policy allows keys memory.high",
            "linux.resources.unified.memory.high: asks \"max\", the policy allows at most 134217728",
        ],
    );
    assert_eq!(n, 2);
    let mut allowed = within.clone();
    allowed["unified"] = json!({"memory.high": "33554432"});
    set(&mut b, allowed);
    check_allows(&p.path, &b.dir, "tests");
    if !limits_enforced() {
        eprintln!(
            "no cgroup v2 memory/pids/cpu controllers here: the allowed limits are only checked"
        );
        return;
    }
    assert_eq!(runs(&rt, &p, &b), "67108864\n32\n50000 100000\n33554432\n");
}

#[test]
fn cgroup_paths_stay_under_the_scopes_parents() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["echo", "ok"]);
    let parent = format!("/{}", unique("l4m-policy"));
    let p = policy_for(&b, json!({"cgroupParents": [parent]}));
    let allowed = format!("the policy allows relative paths, {parent}");
    for path in [
        "/elsewhere/c".to_string(),
        format!("{parent}/../escape"),
        format!("{parent}/c/../../up"),
        parent.clone(),
        format!("{parent}-evil/c"),
        "/".into(),
    ] {
        b.edit(|c| c["linux"]["cgroupsPath"] = json!(path));
        let n = refuses(
            &rt,
            &p,
            &b,
            &[&format!("linux.cgroupsPath: asks {path}, {allowed}")],
        );
        assert_eq!(n, 1, "{path}");
    }
    b.edit(|c| c["linux"]["cgroupsPath"] = json!("../up"));
    refuses(&rt, &p, &b, &["linux.cgroupsPath: asks ../up"]);
    // Relative paths only where the scope allows them.
    b.edit(|c| c["linux"]["cgroupsPath"] = json!("beside"));
    let absolute_only = policy_for(
        &b,
        json!({"cgroupParents": [parent], "relativeCgroups": false}),
    );
    refuses(
        &rt,
        &absolute_only,
        &b,
        &[&format!(
            "linux.cgroupsPath: asks \"beside\" (beside the runtime's group), the policy allows {parent}"
        )],
    );
    let group = cgroup2_mount().join(parent.trim_start_matches('/'));
    assert!(
        !group.exists(),
        "a refused container made {}",
        group.display()
    );
    let leaf = format!("{parent}/c");
    b.edit(|c| c["linux"]["cgroupsPath"] = json!(leaf));
    let out = runs(&rt, &absolute_only, &b);
    let _ = std::fs::remove_dir(&group);
    assert_eq!(out, "ok\n");
}

#[test]
fn devices_and_device_access_need_the_scope_to_list_them() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["sh", "-c", "echo x > /dev/l4m-null && echo ok"]);
    let p = policy_for(&b, json!({}));
    let node = json!({"path": "/dev/l4m-null", "type": "c", "major": 1, "minor": 3,
                      "fileMode": 438, "uid": 0, "gid": 0});
    let access = json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"});
    b.edit(|c| {
        c["linux"]["devices"] = json!([node]);
        c["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(access.clone());
    });
    let n = refuses(
        &rt,
        &p,
        &b,
        &[
            "linux.devices[0]: asks {",
            "linux.resources.devices[1]: asks {",
            "the policy allows none",
        ],
    );
    assert_eq!(n, 2);
    let listed = policy_for(
        &b,
        json!({"devices": [{"path": "/dev/l4m-null", "type": "c", "major": 1, "minor": 3}]}),
    );
    // Every device allowed, or another device number: refused even so.
    b.edit(|c| {
        c["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "access": "rwm"}));
        c["linux"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"path": "/dev/l4m-zero", "type": "c", "major": 1, "minor": 5}));
    });
    let n = refuses(
        &rt,
        &listed,
        &b,
        &[
            "linux.devices[1]: asks {",
            "linux.resources.devices[2]: asks {",
            "the policy allows /dev/l4m-null c 1:3",
        ],
    );
    assert_eq!(n, 2);
    b.edit(|c| {
        c["linux"]["devices"] = json!([node]);
        c["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}, access]);
    });
    assert_eq!(runs(&rt, &listed, &b), "ok\n");
}

#[test]
fn sysctls_need_the_scope_to_list_their_keys() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["cat", "/proc/sys/kernel/domainname"]);
    let p = policy_for(&b, json!({}));
    b.edit(|c| {
        c["linux"]["sysctl"] = json!({"kernel.domainname": "l4m-test", "net.ipv4.ip_forward": "1"})
    });
    let n = refuses(
        &rt,
        &p,
        &b,
        &[
            "linux.sysctl.kernel.domainname: asks kernel.domainname, the policy allows none",
            "linux.sysctl.net.ipv4.ip_forward: asks net.ipv4.ip_forward",
        ],
    );
    assert_eq!(n, 2);
    let listed = policy_for(&b, json!({"sysctls": ["kernel.domainname"]}));
    assert_eq!(
        refuses(&rt, &listed, &b, &["linux.sysctl.net.ipv4.ip_forward"]),
        1
    );
    b.edit(|c| c["linux"]["sysctl"] = json!({"kernel.domainname": "l4m-test"}));
    assert_eq!(runs(&rt, &listed, &b), "l4m-test\n");
}

#[test]
fn behaviour_annotations_need_the_scope_to_list_them_and_others_are_free() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["echo", "ok"]);
    let p = policy_for(&b, json!({}));
    b.edit(|c| {
        c["annotations"] = json!({
            "org.left4me.cpuset": "auto",
            "org.left4me.network": "public-only",
            "org.left4me.notify": "container",
            "org.left4me.instance": "free",
            "org.example.note": "free too",
        })
    });
    let n = refuses(
        &rt,
        &p,
        &b,
        &[
            "annotations.org.left4me.cpuset: asks \"auto\", the policy allows annotations none",
            "annotations.org.left4me.network: asks \"public-only\"",
            "annotations.org.left4me.notify: asks \"container\"",
        ],
    );
    assert_eq!(n, 3);
    let listed = policy_for(
        &b,
        json!({"annotations": ["org.left4me.cpuset", "org.left4me.network", "org.left4me.notify"]}),
    );
    check_allows(&listed.path, &b.dir, "tests");
    b.edit(|c| {
        c["annotations"] = json!({"org.left4me.instance": "free", "org.example.note": "free too"})
    });
    assert_eq!(runs(&rt, &p, &b), "ok\n");
}

#[test]
fn oom_score_adj_may_not_go_below_the_scopes_minimum() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["cat", "/proc/self/oom_score_adj"]);
    let p = policy_for(&b, json!({"oomScoreAdjMin": -100}));
    b.edit(|c| c["process"]["oomScoreAdj"] = json!(-500));
    let n = refuses(
        &rt,
        &p,
        &b,
        &["process.oomScoreAdj: asks -500, the policy allows >= -100"],
    );
    assert_eq!(n, 1);
    // The default minimum is 0.
    let default = policy_for(&b, json!({}));
    b.edit(|c| c["process"]["oomScoreAdj"] = json!(-1));
    refuses(
        &rt,
        &default,
        &b,
        &["process.oomScoreAdj: asks -1, the policy allows >= 0"],
    );
    b.edit(|c| c["process"]["oomScoreAdj"] = json!(-100));
    check_allows(&p.path, &b.dir, "tests");
    b.edit(|c| c["process"]["oomScoreAdj"] = json!(300));
    assert_eq!(runs(&rt, &p, &b), "300\n");
}

#[test]
fn realtime_scheduling_and_io_priority_are_refused() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    // Field 41 of /proc/PID/stat: the scheduling policy (3: SCHED_BATCH).
    let mut b = confined(&["sh", "-c", "cut -d' ' -f41 /proc/self/stat"]);
    let p = policy_for(&b, json!({}));
    for policy in ["SCHED_FIFO", "SCHED_RR"] {
        b.edit(|c| c["process"]["scheduler"] = json!({"policy": policy, "priority": 50}));
        let n = refuses(
            &rt,
            &p,
            &b,
            &[&format!(
                "process.scheduler.policy: asks {policy}, the policy allows SCHED_OTHER, SCHED_BATCH, SCHED_IDLE"
            )],
        );
        assert_eq!(n, 1);
    }
    b.edit(|c| {
        c["process"]["scheduler"] = json!({"policy": "SCHED_BATCH"});
        c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_RT", "priority": 0});
    });
    refuses(
        &rt,
        &p,
        &b,
        &["process.ioPriority.class: asks IOPRIO_CLASS_RT, the policy allows IOPRIO_CLASS_BE, IOPRIO_CLASS_IDLE"],
    );
    b.edit(|c| c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 4}));
    assert_eq!(runs(&rt, &p, &b), "3\n");
}

/// What `process.scheduler` may not ask for, RLIMIT_RTPRIO and RLIMIT_NICE let the
/// process take by itself (sched_setscheduler, setpriority): the runtime sets them as
/// root, above the host's limits.
#[test]
fn rlimits_cannot_grant_the_priorities_the_scheduler_rule_refuses() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    // Field 19 of /proc/PID/stat: the nice value.
    let mut b = confined(&[
        "sh",
        "-c",
        "renice -n -15 -p $$ >/dev/null && cut -d' ' -f19 /proc/self/stat",
    ]);
    let p = policy_for(&b, json!({}));
    b.edit(|c| {
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NICE", "hard": 40, "soft": 40},
            {"type": "RLIMIT_RTPRIO", "hard": 99, "soft": 99}
        ])
    });
    let out = run_under(&rt, &p, &b, &unique("rlimits"));
    assert!(
        !(out.status.success() && stdout(&out).trim() == "-15"),
        "uid 1000 without capabilities reniced itself to -15 under the policy"
    );
    refusal(&out, &p.path, "tests", &["process.rlimits"]);
}

#[test]
fn masked_paths_must_include_the_scopes_list() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["echo", "ok"]);
    let p = policy_for(&b, json!({}));
    let base = b.config.clone();
    b.edit(|c| {
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .retain(|p| p != "/proc/kcore")
    });
    let n = refuses(
        &rt,
        &p,
        &b,
        &["linux.maskedPaths: asks leaving /proc/kcore unmasked, the policy allows every path of the policy's maskedPaths masked"],
    );
    assert_eq!(n, 1);
    b.edit(|c| {
        c["linux"].as_object_mut().unwrap().remove("maskedPaths");
    });
    refuses(
        &rt,
        &p,
        &b,
        &["linux.maskedPaths: asks leaving /proc/acpi, /proc/kcore, /proc/keys, /proc/latency_stats, /proc/timer_list, /proc/sched_debug, /proc/scsi, /sys/firmware unmasked"],
    );
    // A scope's own list: only /proc/kcore.
    let own = policy_for(&b, json!({"maskedPaths": ["/proc/kcore"]}));
    b.edit(|c| c["linux"]["maskedPaths"] = json!(["/proc/kcore"]));
    assert_eq!(runs(&rt, &own, &b), "ok\n");
    b.config = base;
    b.save();
    assert_eq!(runs(&rt, &p, &b), "ok\n");
}

#[test]
fn seccomp_filters_must_be_at_least_as_strict_as_a_listed_profile() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["sh", "-c", "grep Seccomp: /proc/self/status"]);
    let p = policy_for(&b, json!({"seccomp": ["srcds"]}));
    let srcds = shipped_profile("srcds");
    let needs = "the policy allows a filter at least as strict as srcds";
    // runc's default filter (what `spec` writes) lets more through than srcds.
    refuses(
        &rt,
        &p,
        &b,
        &["linux.seccomp: asks a weaker filter (vs srcds: "],
    );
    b.edit(|c| {
        c["linux"].as_object_mut().unwrap().remove("seccomp");
    });
    let n = refuses(
        &rt,
        &p,
        &b,
        &[&format!("linux.seccomp: asks no seccomp filter, {needs}")],
    );
    assert_eq!(n, 1);
    let mut mount = srcds.clone();
    mount["syscalls"][0]["names"]
        .as_array_mut()
        .unwrap()
        .push(json!("mount"));
    b.edit(|c| c["linux"]["seccomp"] = mount);
    refuses(
        &rt,
        &p,
        &b,
        &["linux.seccomp: asks a weaker filter (vs srcds: mount allowed (the profile does not allow it so)), the policy allows a filter at least as strict as srcds"],
    );
    let mut open = srcds.clone();
    open["defaultAction"] = json!("SCMP_ACT_ALLOW");
    b.edit(|c| c["linux"]["seccomp"] = open);
    refuses(
        &rt,
        &p,
        &b,
        &["linux.seccomp: asks a weaker filter (vs srcds: defaultAction \"SCMP_ACT_ALLOW\")"],
    );
    // The profile itself, and a stricter one (the key calls denied too), run.
    b.edit(|c| c["linux"]["seccomp"] = srcds.clone());
    assert_eq!(runs(&rt, &p, &b).trim(), "Seccomp:\t2");
    let mut stricter = srcds.clone();
    stricter["syscalls"][0]["names"]
        .as_array_mut()
        .unwrap()
        .retain(|n| !["add_key", "keyctl", "request_key"].contains(&n.as_str().unwrap()));
    b.edit(|c| c["linux"]["seccomp"] = stricter);
    assert_eq!(runs(&rt, &p, &b).trim(), "Seccomp:\t2");

    // A profile named by path: root's alone, or it does not count.
    let file_policy = PolicyFile::scopes(vec![]);
    let profile = file_policy.dir.join("profile.json");
    std::fs::write(&profile, serde_json::to_vec(&srcds).unwrap()).unwrap();
    chmod(&profile, 0o644);
    let by_path = policy_for(&b, json!({"seccomp": [profile]}));
    b.edit(|c| c["linux"]["seccomp"] = srcds.clone());
    check_allows(&by_path.path, &b.dir, "tests");
    chown(&profile, 1234);
    let out = check(Some(&by_path.path), &b.dir);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!(
            "  - linux.seccomp: asks a weaker filter ({}: not a root-owned regular file)",
            profile.display()
        )),
        "{}",
        stdout(&out)
    );
}

// ---------------------------------------------------------------------------------------
// How refusals look, and what they leave.

#[test]
fn every_violation_is_reported_at_once_on_one_line() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["echo", "ok"]);
    let p = policy_for(&b, json!({}));
    b.edit(|c| {
        c["process"]["capabilities"] = json!({"bounding": ["CAP_SYS_ADMIN"]});
        c["process"]["noNewPrivileges"] = json!(false);
        c["process"]["oomScoreAdj"] = json!(-999);
        remove_namespace(c, "pid");
        push_mount(
            c,
            json!({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rro"]}),
        );
        c["linux"]["sysctl"] = json!({"kernel.domainname": "x"});
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .retain(|p| p != "/proc/kcore");
        c["hooks"] = json!({"poststop": [{"path": "/tmp/x"}]});
        c["annotations"] = json!({"org.left4me.network": "public-only"});
    });
    let mount = format!("mounts[{NEXT_MOUNT}].source: asks /");
    let fields: [&str; 9] = [
        "process.capabilities.bounding: asks CAP_SYS_ADMIN",
        "process.noNewPrivileges: asks false",
        "process.oomScoreAdj: asks -999",
        "linux.namespaces: asks the host's pid namespace",
        &mount,
        "linux.sysctl.kernel.domainname",
        "linux.maskedPaths: asks leaving /proc/kcore unmasked",
        "hooks.poststop[0].path: asks /tmp/x",
        "annotations.org.left4me.network",
    ];
    let n = refuses(&rt, &p, &b, &fields);
    assert_eq!(n, fields.len());
    // `policy check` lists the same, one per line.
    let out = check(Some(&p.path), &b.dir);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("scope \"tests\": REFUSED, {n} violation(s)\n")),
        "{text}"
    );
    let listed: Vec<&str> = text.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(listed.len(), n, "{text}");
    for f in fields {
        assert!(listed.iter().any(|l| l.contains(f)), "{f} missing:\n{text}");
    }
}

#[test]
fn a_refused_bundle_leaves_nothing_behind() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let blocks = rt.root.with_extension("blocks.json");
    let id = unique("nothing");
    let mut b = confined(&["echo", "ok"]);
    let p = policy_for(&b, json!({}));
    // Each of these would make something: a cgroup named after the id, a UID/GID block,
    // a bind mount.
    b.edit(|c| {
        c["process"]["capabilities"] = json!({"bounding": ["CAP_SYS_ADMIN"]});
        c["linux"]["cgroupsPath"] = json!(format!("{id}-group"));
        c["left4me"] = json!({"userns": {"auto": true}});
        push_mount(
            c,
            json!({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rro"]}),
        );
    });
    let mounts_of_ours = || -> Vec<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&id) || l.contains(b.dir.to_str().unwrap()))
            .map(String::from)
            .collect()
    };
    for command in ["run", "create"] {
        let mut cmd = rt.command();
        cmd.arg("--id-blocks")
            .arg(&blocks)
            .arg("--policy")
            .arg(&p.path)
            .args([command, "--bundle", b.dir.to_str().unwrap(), &id]);
        let out = run_captured(&mut cmd);
        let n = refusal(
            &out,
            &p.path,
            "tests",
            &[
                "process.capabilities.bounding: asks CAP_SYS_ADMIN",
                "left4me.userns.auto: asks an automatic UID/GID block, the policy allows no automatic blocks",
                &format!("mounts[{NEXT_MOUNT}].source: asks /"),
            ],
        );
        assert_eq!(n, 3, "{command}");
        assert!(!rt.root.join(&id).exists(), "{command}: a state directory");
        assert_eq!(rt.state(&id), None, "{command}: state answers");
        let listed = stdout(&rt.cmd(&["list", "--quiet"]));
        assert!(!listed.contains(&id), "{command}: listed: {listed}");
        assert_eq!(
            cgroups_named(&id),
            Vec::<PathBuf>::new(),
            "{command}: a cgroup"
        );
        assert_eq!(mounts_of_ours(), Vec::<String>::new(), "{command}: mounts");
        let text = std::fs::read_to_string(&blocks).unwrap_or_default();
        assert!(!text.contains(&id), "{command}: a UID/GID block: {text}");
    }
    let _ = std::fs::remove_file(&blocks);
    let _ = std::fs::remove_file(blocks.with_extension("lock"));
}

// ---------------------------------------------------------------------------------------
// left4me: the shipped policy against an attacker, and against what left4me makes.

/// A copy of the shipped policy whose game-server scope governs `instances`.
fn shipped_for_instances(instances: &Path, store: Option<&Path>) -> PolicyFile {
    let mut doc = shipped_policy();
    assert_eq!(doc["scopes"][0]["name"], "left4me game servers");
    doc["scopes"][0]["bundles"] = json!([instances]);
    if let Some(store) = store {
        doc["scopes"][0]["layerStores"] = json!([store]);
    }
    PolicyFile::new(&doc)
}

#[test]
fn the_web_apps_bundles_cannot_reach_beyond_the_shipped_policy() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let top = scratch().join(unique("attacker"));
    let instances = top.join("instances");
    std::fs::create_dir_all(&instances).unwrap();
    let p = shipped_for_instances(&instances, None);
    const SCOPE: &str = "left4me game servers";
    // What the web app could write within the policy: a game server as uid 980.
    let mut b = Bundle::new(&["sh", "-c", "id -u"]);
    let evil = instances.join("evil");
    std::fs::rename(&b.dir, &evil).unwrap();
    b.dir = evil.clone();
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 980, "gid": 980});
        c["process"]["capabilities"] = json!({});
        c["process"]["oomScoreAdj"] = json!(-200);
        remove_namespace(c, "network");
        c["linux"]["seccomp"] = shipped_profile("srcds");
        c["linux"]["resources"]["memory"] = json!({"limit": 1073741824});
        c["linux"]["resources"]["pids"] = json!({"limit": 128});
    });
    let st = Command::new("chown")
        .args(["-R", "980:980"])
        .arg(&top)
        .status()
        .unwrap();
    assert!(st.success());
    let base = b.config.clone();
    check_allows(&p.path, &b.dir, SCOPE);
    if limits_enforced() {
        assert_eq!(ok(&run_under(&rt, &p, &b, &unique("web"))), "980\n");
    }
    let attack = |b: &mut Bundle, what: &str, f: &dyn Fn(&mut Value), needle: &str| {
        b.config = base.clone();
        b.edit(|c| f(c));
        let out = run_under(&rt, &p, b, &unique("attack"));
        let n = refusal(&out, &p.path, SCOPE, &[needle]);
        assert_eq!(n, 1, "{what}: {}", stderr(&out));
    };
    attack(
        &mut b,
        "the host's root, bound",
        &|c| {
            push_mount(
                c,
                json!({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rw"]}),
            )
        },
        &format!("mounts[{NEXT_MOUNT}].source: asks /, the policy allows none"),
    );
    attack(
        &mut b,
        "CAP_SYS_ADMIN",
        &|c| c["process"]["capabilities"] = json!({"bounding": ["CAP_SYS_ADMIN"]}),
        "process.capabilities.bounding: asks CAP_SYS_ADMIN, the policy allows none",
    );
    attack(
        &mut b,
        "a hook",
        &|c| c["hooks"] = json!({"createRuntime": [{"path": "/tmp/x"}]}),
        "hooks.createRuntime[0].path: asks /tmp/x, the policy allows none",
    );
    attack(
        &mut b,
        "the host's pid namespace, left out",
        &|c| remove_namespace(c, "pid"),
        "linux.namespaces: asks the host's pid namespace",
    );
    attack(
        &mut b,
        "the host's pid namespace, joined",
        &|c| set_namespace(c, json!({"type": "pid", "path": "/proc/1/ns/pid"})),
        "linux.namespaces[pid].path: asks joining /proc/1/ns/pid",
    );
    attack(
        &mut b,
        "host root mapped into a user namespace",
        &|c| {
            set_namespace(c, json!({"type": "user"}));
            c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 1}]);
            c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 980, "size": 1}]);
        },
        "linux.uidMappings[0]: asks host ids 0+1, the policy allows host ids 980",
    );
    attack(
        &mut b,
        "64G of memory",
        &|c| c["linux"]["resources"]["memory"] = json!({"limit": 68719476736i64}),
        "linux.resources.memory.limit: asks 68719476736, the policy allows at most 2147483648",
    );
    attack(
        &mut b,
        "running as root",
        &|c| c["process"]["user"] = json!({"uid": 0, "gid": 980}),
        "process.user.uid: asks 0, the policy allows host ids 980",
    );
    attack(
        &mut b,
        "no seccomp filter",
        &|c| {
            c["linux"].as_object_mut().unwrap().remove("seccomp");
        },
        "linux.seccomp: asks no seccomp filter",
    );

    // The scope follows the bundle through symlinks both ways: a link elsewhere to the
    // bundle in the instances directory (governed as resolved), and a link in the
    // instances directory to a bundle elsewhere (governed as named).
    b.config = base.clone();
    b.edit(|c| c["process"]["capabilities"] = json!({"bounding": ["CAP_SYS_ADMIN"]}));
    let alias = top.join("alias");
    std::os::unix::fs::symlink(&evil, &alias).unwrap();
    let mut elsewhere = Bundle::new(&["true"]);
    let outside = top.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let moved = outside.join("evil2");
    std::fs::rename(&elsewhere.dir, &moved).unwrap();
    elsewhere.dir = moved.clone();
    elsewhere.config = b.config.clone();
    elsewhere.save();
    let linked = instances.join("evil2");
    std::os::unix::fs::symlink(&moved, &linked).unwrap();
    for given in [&alias, &linked] {
        let out = under(
            &rt,
            &p.path,
            &[
                "run",
                "--bundle",
                given.to_str().unwrap(),
                &unique("linked"),
            ],
        );
        refusal(
            &out,
            &p.path,
            SCOPE,
            &["process.capabilities.bounding: asks CAP_SYS_ADMIN"],
        );
    }
    for link in [&alias, &linked] {
        std::fs::remove_file(link).unwrap();
    }
    drop((b, elsewhere));
    let _ = std::fs::remove_dir_all(&top);
}

#[test]
fn the_shipped_policy_allows_the_instances_left4me_makes() {
    if !can_run() {
        return;
    }
    let dir = scratch().join(unique("instances"));
    let instances = dir.join("instances");
    std::fs::create_dir_all(&instances).unwrap();
    let spec = dir.join("spec.yaml");
    std::fs::write(&spec, "port: 27123\noverlays: [config, map]\n").unwrap();
    let store = std::fs::canonicalize(l4d2_store()).unwrap();
    let mut cmd = Command::new(runtime_bin());
    cmd.args(["instance", "init", "alpha", "--spec"])
        .arg(&spec)
        .arg("--store")
        .arg(&store)
        .arg("--instances")
        .arg(&instances);
    let bundle = PathBuf::from(ok(&run_captured(&mut cmd)).trim());
    assert_eq!(bundle, instances.join("alpha"));
    let p = shipped_for_instances(&instances, Some(&store));
    let text = check_allows(&p.path, &bundle, "left4me game servers");
    assert!(text.contains("user          980:980\n"), "{text}");
    assert!(text.contains("capabilities  none\n"), "{text}");
    assert!(text.contains("seccomp       a filter\n"), "{text}");
    assert!(text.contains("layers        store "), "{text}");
    // Another store than the scope's: refused.
    let other = shipped_for_instances(&instances, Some(Path::new("/var/lib/left4me")));
    let out = check(Some(&other.path), &bundle);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!(
            "  - left4me.layers.store: asks {}, the policy allows /var/lib/left4me",
            store.display()
        )),
        "{}",
        stdout(&out)
    );
    if limits_enforced() {
        // Created for real under the policy (and deleted unstarted).
        let rt = Runtime::new();
        let id = unique("instance");
        ok(&under(
            &rt,
            &p.path,
            &["create", "--bundle", bundle.to_str().unwrap(), &id],
        ));
        assert_eq!(rt.status(&id).as_deref(), Some("created"));
        ok(&rt.cmd(&["delete", "--force", &id]));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_policy_allows_the_sandbox_build() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let dir = scratch().join(unique("sandbox"));
    let (scripts, overlays, work) = (dir.join("scripts"), dir.join("overlays"), dir.join("work"));
    for d in [&scripts, &overlays] {
        std::fs::create_dir_all(d).unwrap();
    }
    let script = scripts.join("build.sh");
    std::fs::write(&script, "echo built > out.txt\n").unwrap();
    let resolv = dir.join("sandbox-resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
    let overlay = overlays.join("maps");

    let mut doc = shipped_policy();
    let sandbox = &mut doc["scopes"][1];
    assert_eq!(sandbox["name"], "left4me script builds");
    sandbox["bundles"] = json!([work]);
    let sources = sandbox["bindSources"].as_array_mut().unwrap();
    let mut rewritten = 0;
    for s in sources.iter_mut() {
        let to = match s["path"].as_str().unwrap() {
            "/var/lib/left4me/scripts" => &scripts,
            "/var/lib/left4me/overlays" => &overlays,
            "/etc/left4me/sandbox-resolv.conf" => &resolv,
            _ => continue,
        };
        s["path"] = json!(to);
        rewritten += 1;
    }
    assert_eq!(rewritten, 3);
    let p = PolicyFile::new(&doc);

    let id = unique("build");
    let mut cmd = rt.command();
    cmd.arg("--policy").arg(&p.path);
    cmd.args(["sandbox", "build", "--id", &id, "--script"])
        .arg(&script)
        .arg("--overlay")
        .arg(&overlay)
        .arg("--resolv-conf")
        .arg(&resolv)
        .arg("--work")
        .arg(&work);
    if !limits_enforced() {
        // Built without limits, which the shipped scope requires.
        cmd.arg("--skip-unavailable-limits");
        let out = run_captured(&mut cmd);
        let err = stderr(&out);
        assert!(!out.status.success(), "built without limits: {err}");
        assert!(
            err.contains(&format!("refused by policy {}", p.path.display()))
                && err.contains("(scope \"left4me script builds\")")
                && err.contains("linux.resources.memory.limit: asks no limit"),
            "{err}"
        );
        assert!(!overlay.join("out.txt").exists());
    } else {
        let out = run_captured(&mut cmd);
        let err = stderr(&out);
        assert!(out.status.success(), "the build failed: {err}");
        assert!(!err.contains("refused"), "{err}");
        assert_eq!(
            std::fs::read_to_string(overlay.join("out.txt")).unwrap(),
            "built\n"
        );
    }
    assert!(!work.join(&id).exists(), "the build's bundle survived");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// config.json and the policy file itself.

#[test]
fn a_symlinked_config_json_is_refused_even_while_it_is_being_swapped() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = confined(&["echo", "good"]);
    let p = policy_for(&b, json!({}));
    // A valid config elsewhere (allowed by the scope too) that prints EVIL.
    let elsewhere = scratch().join(unique("evil-config"));
    std::fs::create_dir_all(&elsewhere).unwrap();
    let mut evil = b.config.clone();
    evil["process"]["args"] = json!(["echo", "EVIL"]);
    let evil_file = elsewhere.join("config.json");
    std::fs::write(&evil_file, serde_json::to_vec_pretty(&evil).unwrap()).unwrap();
    let config = b.dir.join("config.json");
    let good = b.dir.join("config.good");
    std::fs::copy(&config, &good).unwrap();

    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink(&evil_file, &config).unwrap();
    fails_with(&run_under(&rt, &p, &b, &unique("symlink")), "not a symlink");
    let out = check(Some(&p.path), &b.dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a symlink"), "{}", stderr(&out));

    // One thread flips config.json between the good file and the symlink (each by an
    // atomic rename), while the bundle runs again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, dir, good, evil_file) =
            (stop.clone(), b.dir.clone(), good.clone(), evil_file.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let tmp = dir.join("config.tmp");
                std::fs::copy(&good, &tmp).unwrap();
                std::fs::rename(&tmp, dir.join("config.json")).unwrap();
                let link = dir.join("config.link");
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&evil_file, &link).unwrap();
                std::fs::rename(&link, dir.join("config.json")).unwrap();
                flips += 1;
            }
            flips
        })
    };
    let (mut ran, mut refused) = (0, 0);
    for _ in 0..50 {
        let out = run_under(&rt, &p, &b, &unique("race"));
        let (o, e) = (stdout(&out), stderr(&out));
        assert!(!o.contains("EVIL"), "the symlinked config ran: {o} {e}");
        if out.status.success() {
            assert_eq!(o, "good\n");
            ran += 1;
        } else {
            assert!(e.contains("not a symlink"), "{e}");
            refused += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let flips = flipper.join().unwrap();
    eprintln!("config.json race: {ran} ran the good config, {refused} refused, {flips} flips");
    assert!(flips > 0);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

/// A tmpfs mounted at a directory (created), unmounted and removed when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs at {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A thread swapping `a` and `b` again and again until [`Flipper::finish`].
struct Flipper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Flipper {
    fn start(a: PathBuf, b: PathBuf) -> Flipper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut flips = 0;
            while !flag.load(Ordering::SeqCst) {
                exchange(&a, &b);
                flips += 1;
            }
            // Back as it was.
            if flips % 2 == 1 {
                exchange(&a, &b);
            }
            flips
        });
        Flipper {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Flipper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How many times the race tests run their bundle (fewer under the VM's emulation).
fn race_rounds() -> usize {
    if std::env::var_os("LEFT4ME_SCRATCH").is_some() {
        20
    } else {
        50
    }
}

#[test]
fn a_bind_source_swapped_for_a_symlink_after_the_check_is_never_mounted() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&[
        "sh",
        "-c",
        "if [ -e /mnt/etc ] || [ -e /mnt/proc ]; then echo LEAK; else echo empty; fi",
    ]);
    // A listed source the bundle's owner can write in (here in the bundle directory):
    // it swaps the directory it asks for with a symlink to the host's root.
    let src = b.dir.join("source");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::os::unix::fs::symlink("/", src.join("d.swap")).unwrap();
    let p = policy_for(&b, json!({"bindSources": [{"path": src}]}));
    b.edit(|c| {
        push_mount(
            c,
            json!({"destination": "/mnt", "type": "bind", "source": src.join("d"),
                   "options": ["rbind", "rro"]}),
        )
    });
    assert_eq!(runs(&rt, &p, &b), "empty\n");
    let flipper = Flipper::start(src.join("d"), src.join("d.swap"));
    let (mut ran, mut refused) = (0, 0);
    for _ in 0..race_rounds() {
        let out = run_under(&rt, &p, &b, &unique("bind-race"));
        let (o, e) = (stdout(&out), stderr(&out));
        assert!(!o.contains("LEAK"), "the host's root was mounted: {o} {e}");
        if out.status.success() {
            assert_eq!(o, "empty\n");
            ran += 1;
        } else {
            assert!(e.contains("(resolves to /)"), "{e}");
            refused += 1;
        }
    }
    let flips = flipper.finish();
    eprintln!("bind source race: {ran} ran, {refused} refused, {flips} flips");
}

/// The rootfs the policy checked (opened without following symlinks) is the root the
/// container gets, even while the bundle's owner swaps `rootfs` for a symlink to another
/// directory. The other directory is a mount point (a tmpfs here; on a host, any mount
/// point the owner can name), so that a root looked up again by path would be usable.
#[test]
fn a_rootfs_swapped_for_a_symlink_after_the_check_is_never_the_root() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = confined(&["cat", "/marker"]);
    let p = policy_for(&b, json!({}));
    std::fs::write(b.rootfs().join("marker"), "good\n").unwrap();
    let tmpfs = Tmpfs::mount(scratch().join(unique("evil-rootfs")));
    let elsewhere = tmpfs.0.clone();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", busybox_rootfs().display()))
        .arg(&elsewhere)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(elsewhere.join("marker"), "EVIL\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, b.dir.join("rootfs.swap")).unwrap();
    b.edit(|c| c["root"]["readonly"] = json!(false));
    assert_eq!(runs(&rt, &p, &b), "good\n");
    let flipper = Flipper::start(b.rootfs(), b.dir.join("rootfs.swap"));
    let (mut ran, mut refused, mut evil) = (0, 0, Vec::new());
    for _ in 0..race_rounds() {
        let out = run_under(&rt, &p, &b, &unique("root-race"));
        let (o, e) = (stdout(&out), stderr(&out));
        if o.contains("EVIL") {
            evil.push(e);
        } else if out.status.success() {
            assert_eq!(o, "good\n");
            ran += 1;
        } else {
            refused += 1;
        }
    }
    let flips = flipper.finish();
    eprintln!(
        "rootfs race: {ran} ran the checked root, {refused} failed, {} ran the swapped-in \
         root, {flips} flips",
        evil.len()
    );
    drop(tmpfs);
    assert!(
        evil.is_empty(),
        "{} of {} runs had the swapped-in rootfs as their root",
        evil.len(),
        race_rounds()
    );
}

#[test]
fn a_policy_file_others_could_have_written_is_not_trusted() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = confined(&["echo", "ok"]);
    let doc = json!({"scopes": [scope(&[&b.dir], json!({}))]});
    let run_with = |policy: &Path| {
        under(
            &rt,
            policy,
            &["run", "--bundle", b.dir.to_str().unwrap(), &unique("trust")],
        )
    };
    let expect_untrusted = |policy: &Path, about: &Path, why: &str| {
        let out = run_with(policy);
        let err = fails_with(&out, &format!("policy file: {} {why}", about.display()));
        assert!(
            err.contains("a policy must be writable by root only"),
            "{err}"
        );
        assert!(stdout(&out).is_empty());
    };
    // Sanity: as written, it is trusted and the bundle runs.
    let good = PolicyFile::new(&doc);
    assert_eq!(runs(&rt, &good, &b), "ok\n");

    let p = PolicyFile::new(&doc);
    chmod(&p.path, 0o664);
    expect_untrusted(
        &p.path,
        &p.path,
        "is writable by group or others (mode 664)",
    );
    chmod(&p.path, 0o646);
    expect_untrusted(
        &p.path,
        &p.path,
        "is writable by group or others (mode 646)",
    );
    chmod(&p.path, 0o644);
    chown(&p.path, 1234);
    expect_untrusted(&p.path, &p.path, "is owned by uid 1234, not root");
    chown(&p.path, 0);
    // Its directory (and every one above) too.
    chmod(&p.dir, 0o777);
    expect_untrusted(&p.path, &p.dir, "is writable by group or others (mode 777)");
    chmod(&p.dir, 0o755);
    chown(&p.dir, 1234);
    expect_untrusted(&p.path, &p.dir, "is owned by uid 1234, not root");
    chown(&p.dir, 0);
    assert_eq!(runs(&rt, &p, &b), "ok\n");

    // A symlink to a good policy.
    let link = p.dir.join("link.json");
    std::os::unix::fs::symlink(&good.path, &link).unwrap();
    let out = run_with(&link);
    let err = fails_with(&out, link.to_str().unwrap());
    assert!(err.contains("symbolic links"), "{err}");
    // A directory, a missing file, a /tmp path.
    fails_with(
        &run_with(&p.dir),
        &format!("{} is not a regular file", p.dir.display()),
    );
    let out = run_with(Path::new("/nonexistent"));
    fails_with(&out, "/nonexistent");
    let in_tmp = Path::new("/tmp").join(unique("l4m-policy.json"));
    std::fs::write(&in_tmp, serde_json::to_vec(&doc).unwrap()).unwrap();
    chmod(&in_tmp, 0o644);
    let out = run_with(&in_tmp);
    assert!(
        !out.status.success(),
        "a policy under {} was trusted",
        in_tmp.display()
    );
    assert!(
        stderr(&out).contains("a policy must be writable by root only"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_file(&in_tmp);

    // Chosen by a user other than root: refused before anything is read.
    for args in [
        &["policy", "check", "--bundle", b.dir.to_str().unwrap()][..],
        &[
            "run",
            "--bundle",
            b.dir.to_str().unwrap(),
            &unique("nonroot"),
        ],
    ] {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", "1234", "--regid", "1234", "--clear-groups"])
            .arg(runtime_bin())
            .arg("--root")
            .arg(&rt.root)
            .arg("--policy")
            .arg(&good.path)
            .args(args);
        let out = run_captured(&mut cmd);
        fails_with(&out, "--policy is for root");
    }
}

#[test]
fn a_policy_that_does_not_parse_or_names_relative_bundles_is_an_error() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = confined(&["echo", "ok"]);
    let run_with = |policy: &Path| {
        under(
            &rt,
            policy,
            &["run", "--bundle", b.dir.to_str().unwrap(), &unique("parse")],
        )
    };
    // A misspelt rule would silently fall back to a default: refused instead.
    let typo = PolicyFile::scopes(vec![scope(
        &[&b.dir],
        json!({"capabilites": ["CAP_SYS_ADMIN"]}),
    )]);
    fails_with(&run_with(&typo.path), "capabilites");
    let relative = PolicyFile::scopes(vec![scope(&[Path::new("instances")], json!({}))]);
    fails_with(
        &run_with(&relative.path),
        "bundle directories must be absolute",
    );
    let not_json = PolicyFile::new(&json!("scopes"));
    fails_with(
        &run_with(&not_json.path),
        &not_json.path.display().to_string(),
    );
}

#[test]
fn without_a_policy_run_warns_once_that_none_is_in_force() {
    if !can_run() {
        return;
    }
    assert!(
        !Path::new("/etc/left4me-runtime/policy.json").exists(),
        "a default policy is installed on this machine"
    );
    let rt = Runtime::new();
    // A bundle any scope would refuse runs: bundles are trusted as runc trusts them.
    let mut b = Bundle::new(&["echo", "ok"]);
    b.edit(|c| c["process"]["noNewPrivileges"] = json!(false));
    let out = rt.run(&b, &unique("nopolicy"));
    assert_eq!(ok(&out), "ok\n");
    let err = stderr(&out);
    assert_eq!(err.matches("no policy in force").count(), 1, "{err}");
    // `create` and `policy check` do not warn; the check says there is none.
    let id = unique("nopolicy-create");
    let out = rt.create(&b, &id);
    ok(&out);
    assert!(
        !stderr(&out).contains("no policy in force"),
        "{}",
        stderr(&out)
    );
    ok(&rt.cmd(&["delete", "--force", &id]));
    let out = check(None, &b.dir);
    let text = ok(&out);
    assert!(
        text.contains("policy        none: the bundle is trusted as runc trusts it\n"),
        "{text}"
    );
}

#[test]
fn policy_check_prints_what_the_bundle_asks_for_and_the_verdict() {
    if !can_run() {
        return;
    }
    let dir = scratch().join(unique("check"));
    let inst = dir.join("inst");
    std::fs::create_dir_all(&inst).unwrap();
    // The scope names the parent: bundles in it are governed, a sibling whose name
    // merely starts the same is not.
    let mut b = confined(&["echo", "ok"]);
    let governed = inst.join("one");
    std::fs::rename(&b.dir, &governed).unwrap();
    b.dir = governed.clone();
    let p = PolicyFile::scopes(vec![scope(&[&inst], json!({}))]);
    let text = check_allows(&p.path, &b.dir, "tests");
    for line in [
        format!("bundle        {}", b.dir.display()),
        "user          1000:1000".into(),
        "capabilities  none".into(),
        "no_new_privs  true".into(),
        "namespaces    pid network ipc uts mount cgroup".into(),
        "bind mounts   none".into(),
        "hooks         0".into(),
        "seccomp       a filter".into(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    b.edit(|c| {
        c["process"]["capabilities"] = json!({"bounding": ["CAP_KILL", "CAP_CHOWN"]});
        c["process"]["noNewPrivileges"] = json!(false);
        set_namespace(c, json!({"type": "ipc", "path": "/proc/1/ns/ipc"}));
        push_mount(
            c,
            json!({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rro"]}),
        );
    });
    let out = check(Some(&p.path), &b.dir);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for line in [
        "capabilities  CAP_CHOWN CAP_KILL".to_string(),
        "no_new_privs  false".into(),
        "namespaces    pid network uts mount cgroup ipc (joins /proc/1/ns/ipc)".into(),
        "bind mounts   / -> /host".into(),
        format!(
            "policy        {} scope \"tests\": REFUSED, 5 violation(s)",
            p.path.display()
        ),
        "  - process.capabilities.bounding: asks CAP_KILL, the policy allows none".into(),
        "  - process.capabilities.bounding: asks CAP_CHOWN, the policy allows none".into(),
        "  - process.noNewPrivileges: asks false, the policy allows true only".into(),
        "  - linux.namespaces[ipc].path: asks joining /proc/1/ns/ipc, the policy allows new namespaces only".into(),
        format!("  - mounts[{NEXT_MOUNT}].source: asks /, the policy allows none"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));

    // Outside every scope: trusted.
    let mut other = confined(&["echo", "ok"]);
    let sibling = dir.join("inst-other");
    std::fs::rename(&other.dir, &sibling).unwrap();
    other.dir = sibling.clone();
    other.edit(|c| {
        c["process"]["capabilities"] = json!({"bounding": ["CAP_KILL"]});
        c["process"]["noNewPrivileges"] = json!(false);
    });
    let out = check(Some(&p.path), &sibling);
    let text = ok(&out);
    assert!(
        text.contains(&format!(
            "policy        {}: no scope covers this bundle (trusted)\n",
            p.path.display()
        )),
        "{text}"
    );
    // And so it runs, although the scope would refuse it.
    let rt = Runtime::new();
    let out = under(
        &rt,
        &p.path,
        &[
            "run",
            "--bundle",
            sibling.to_str().unwrap(),
            &unique("outside"),
        ],
    );
    assert_eq!(ok(&out), "ok\n");
    drop((b, other));
    let _ = std::fs::remove_dir_all(&dir);
}
