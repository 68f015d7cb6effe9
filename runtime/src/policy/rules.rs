//! One function per policy rule; each appends the violations it finds, so a refused
//! bundle learns everything that is wrong with it at once.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{lexical, Checked, IdRange, Scope, Violation};
use crate::spec::Bundle;

type Found = Vec<Violation>;

fn push(
    out: &mut Found,
    field: impl Into<String>,
    asked: impl Into<String>,
    allowed: impl Into<String>,
) {
    out.push(Violation {
        field: field.into(),
        asked: asked.into(),
        allowed: allowed.into(),
    });
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

pub fn check(scope: &Scope, bundle: &Bundle, checked: &mut Checked) -> Found {
    let spec = serde_json::to_value(&bundle.spec).unwrap_or(Value::Null);
    let mut out = Vec::new();
    root(bundle, &spec, checked, &mut out);
    process(scope, &spec, &mut out);
    namespaces(scope, &spec, &mut out);
    users(scope, bundle, &spec, &mut out);
    mounts(scope, &spec, checked, &mut out);
    layers(scope, bundle, &mut out);
    hooks(scope, &spec, &mut out);
    resources(scope, &spec, &mut out);
    cgroup_path(scope, &spec, &mut out);
    devices(scope, &spec, &mut out);
    sysctls(scope, &spec, &mut out);
    annotations(scope, &spec, &mut out);
    masked(scope, &spec, &mut out);
    if let Some(profiles) = &scope.seccomp {
        super::seccomp::check(profiles, &spec["linux"]["seccomp"], &mut out);
    }
    out
}

/// The root must be the bundle's own directory, not a host path; it is opened here
/// without following any symlink and then mounted from that descriptor.
fn root(bundle: &Bundle, spec: &Value, checked: &mut Checked, out: &mut Found) {
    let path = spec["root"]["path"].as_str().unwrap_or("");
    let p = Path::new(path);
    let inside = "a directory inside the bundle";
    if p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
        push(out, "root.path", format!("{path:?}"), inside);
        return;
    }
    let resolve = crate::sys::fd::Resolve {
        no_symlinks: true,
        ..Default::default()
    };
    match crate::sys::fd::openat2(
        None,
        &bundle.dir.join(p),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        resolve,
    ) {
        Ok(fd) => checked.root = Some(fd),
        Err(e) => push(
            out,
            "root.path",
            format!("{path:?} ({})", e.errno.desc()),
            format!("{inside}, no symlinks"),
        ),
    }
}

fn process(scope: &Scope, spec: &Value, out: &mut Found) {
    let p = &spec["process"];
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        for cap in p["capabilities"][set].as_array().into_iter().flatten() {
            let cap = cap.as_str().unwrap_or("");
            if !scope.capabilities.iter().any(|c| c == cap) {
                push(
                    out,
                    format!("process.capabilities.{set}"),
                    cap,
                    list(&scope.capabilities),
                );
            }
        }
    }
    if scope.no_new_privileges && p["noNewPrivileges"] != Value::Bool(true) {
        push(
            out,
            "process.noNewPrivileges",
            p["noNewPrivileges"].to_string(),
            "true only",
        );
    }
    if let Some(adj) = p["oomScoreAdj"].as_i64() {
        if adj < i64::from(scope.oom_score_adj_min) {
            push(
                out,
                "process.oomScoreAdj",
                adj.to_string(),
                format!(">= {}", scope.oom_score_adj_min),
            );
        }
    }
    if let Some(policy) = p["scheduler"]["policy"].as_str() {
        if !matches!(policy, "SCHED_OTHER" | "SCHED_BATCH" | "SCHED_IDLE") {
            push(
                out,
                "process.scheduler.policy",
                policy,
                "SCHED_OTHER, SCHED_BATCH, SCHED_IDLE",
            );
        }
    }
    rlimits(scope, p, out);
    if p["ioPriority"]["class"] == "IOPRIO_CLASS_RT" {
        push(
            out,
            "process.ioPriority.class",
            "IOPRIO_CLASS_RT",
            "IOPRIO_CLASS_BE, IOPRIO_CLASS_IDLE",
        );
    }
}

/// The runtime (root) could set any limit: a bundle gets what the policy names, or no
/// more than the runtime itself has.
fn rlimits(scope: &Scope, process: &Value, out: &mut Found) {
    for (i, r) in process["rlimits"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let kind = r["type"].as_str().unwrap_or("");
        let hard = r["hard"].as_u64().unwrap_or(u64::MAX);
        let soft = r["soft"].as_u64().unwrap_or(u64::MAX);
        let asked = hard.max(soft);
        let (max, why) = match scope.rlimits.get(kind) {
            Some(max) => (*max, format!("at most {max}")),
            None => {
                let own = own_hard_limit(kind);
                (own, format!("at most the runtime's own hard limit {own}"))
            }
        };
        if asked > max {
            push(
                out,
                format!("process.rlimits[{i}] {kind}"),
                asked.to_string(),
                why,
            );
        }
    }
}

fn own_hard_limit(kind: &str) -> u64 {
    crate::process::rlimit_by_name(kind)
        .and_then(|r| nix::sys::resource::getrlimit(r).ok())
        .map_or(0, |(_, hard)| hard)
}

fn namespaces(scope: &Scope, spec: &Value, out: &mut Found) {
    let present: Vec<&Value> = spec["linux"]["namespaces"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for ns in &present {
        if let Some(path) = ns["path"].as_str().filter(|p| !p.is_empty()) {
            push(
                out,
                format!(
                    "linux.namespaces[{}].path",
                    ns["type"].as_str().unwrap_or("?")
                ),
                format!("joining {path}"),
                "new namespaces only",
            );
        }
    }
    let kinds = [
        "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time",
    ];
    for kind in kinds {
        let has = present.iter().any(|n| n["type"] == kind);
        let must = scope.new_namespaces.iter().any(|n| n == kind)
            || (kind == "user" && scope.user.namespace_required);
        if has {
            continue;
        }
        if must {
            push(
                out,
                "linux.namespaces",
                format!("the host's {kind} namespace"),
                format!("a new {kind} namespace"),
            );
        } else if kind != "time"
            && kind != "user"
            && !scope.host_namespaces.iter().any(|n| n == kind)
        {
            push(
                out,
                "linux.namespaces",
                format!("the host's {kind} namespace"),
                format!("host namespaces: {}", list(&scope.host_namespaces)),
            );
        }
    }
}

fn ranges(allowed: &[IdRange]) -> String {
    if allowed.is_empty() {
        return "no host ids".into();
    }
    let parts: Vec<String> = allowed
        .iter()
        .map(|r| {
            if r.size == 1 {
                r.start.to_string()
            } else {
                format!("{}-{}", r.start, u64::from(r.start) + u64::from(r.size) - 1)
            }
        })
        .collect();
    format!("host ids {}", parts.join(", "))
}

fn ids_allowed(allowed: &[IdRange], start: u32, size: u32) -> bool {
    allowed.iter().any(|r| r.contains(start, size))
}

/// Mappings (`[{containerID, hostID, size}]`) onto host ids the scope allows.
fn mappings(scope: &Scope, field: &str, maps: &Value, out: &mut Found) {
    for (i, m) in maps.as_array().into_iter().flatten().enumerate() {
        let host = m["hostID"].as_u64().unwrap_or(0) as u32;
        let size = m["size"].as_u64().unwrap_or(0) as u32;
        if !ids_allowed(&scope.user.host_ids, host, size) {
            push(
                out,
                format!("{field}[{i}]"),
                format!("host ids {host}+{size}"),
                ranges(&scope.user.host_ids),
            );
        }
    }
}

fn users(scope: &Scope, bundle: &Bundle, spec: &Value, out: &mut Found) {
    let linux = &spec["linux"];
    let userns = linux["namespaces"]
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n["type"] == "user"));
    if bundle.userns.as_ref().is_some_and(|u| u.auto) {
        if !scope.user.automatic_blocks {
            push(
                out,
                "left4me.userns.auto",
                "an automatic UID/GID block",
                "no automatic blocks",
            );
        }
        return;
    }
    if userns {
        mappings(scope, "linux.uidMappings", &linux["uidMappings"], out);
        mappings(scope, "linux.gidMappings", &linux["gidMappings"], out);
        return;
    }
    let user = &spec["process"]["user"];
    let uid = user["uid"].as_u64().unwrap_or(0) as u32;
    let gid = user["gid"].as_u64().unwrap_or(0) as u32;
    if !ids_allowed(&scope.user.host_ids, uid, 1) {
        push(
            out,
            "process.user.uid",
            uid.to_string(),
            ranges(&scope.user.host_ids),
        );
    }
    if !ids_allowed(&scope.user.host_ids, gid, 1) {
        push(
            out,
            "process.user.gid",
            gid.to_string(),
            ranges(&scope.user.host_ids),
        );
    }
    for g in user["additionalGids"].as_array().into_iter().flatten() {
        let g = g.as_u64().unwrap_or(0) as u32;
        if !ids_allowed(&scope.user.host_ids, g, 1) {
            push(
                out,
                "process.user.additionalGids",
                g.to_string(),
                ranges(&scope.user.host_ids),
            );
        }
    }
}

const SPECIAL_FS: [&str; 7] = [
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

fn mounts(scope: &Scope, spec: &Value, checked: &mut Checked, out: &mut Found) {
    for (i, m) in spec["mounts"].as_array().into_iter().flatten().enumerate() {
        let field = format!("mounts[{i}]");
        let options: Vec<String> = m["options"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_str().map(String::from))
            .collect();
        let parsed = crate::rootfs::mounts::parse_options(&options);
        let kind = m["type"].as_str().unwrap_or("");
        mappings(
            scope,
            &format!("{field}.uidMappings"),
            &m["uidMappings"],
            out,
        );
        mappings(
            scope,
            &format!("{field}.gidMappings"),
            &m["gidMappings"],
            out,
        );
        if !(parsed.bind || kind == "bind") {
            if !SPECIAL_FS.contains(&kind) && !scope.filesystems.iter().any(|f| f == kind) {
                let mut fs: Vec<String> = SPECIAL_FS.iter().map(|s| s.to_string()).collect();
                fs.extend(scope.filesystems.iter().cloned());
                push(out, format!("{field}.type"), format!("{kind:?}"), list(&fs));
            }
            continue;
        }
        let source = m["source"].as_str().unwrap_or("");
        if let Some(fd) = bind_source(scope, &field, source, &parsed, out) {
            checked.binds.push((i, fd));
        }
    }
}

/// Opens the source as the kernel would (symlinks followed), checks where it really
/// is, and returns the descriptor to mount from.
fn bind_source(
    scope: &Scope,
    field: &str,
    source: &str,
    opts: &crate::rootfs::mounts::Options,
    out: &mut Found,
) -> Option<std::os::fd::OwnedFd> {
    use crate::sys::mount_api::attr::RDONLY;
    let allowed = || {
        let v: Vec<String> = scope
            .bind_sources
            .iter()
            .map(|b| {
                format!(
                    "{} ({})",
                    b.path.display(),
                    if b.writable { "rw" } else { "ro" }
                )
            })
            .collect();
        list(&v)
    };
    if !Path::new(source).is_absolute() {
        push(
            out,
            format!("{field}.source"),
            format!("{source:?} (relative to the bundle)"),
            allowed(),
        );
        return None;
    }
    let opened =
        crate::sys::fd::openat2(None, Path::new(source), libc::O_PATH, 0, Default::default());
    let fd = match opened {
        Ok(fd) => fd,
        Err(e) => {
            let asked = format!("{source} ({})", e.errno.desc());
            push(out, format!("{field}.source"), asked, allowed());
            return None;
        }
    };
    let resolved = match crate::sys::fd::fd_path(&fd) {
        Ok(p) => p,
        Err(e) => {
            push(
                out,
                format!("{field}.source"),
                format!("{source} ({e})"),
                allowed(),
            );
            return None;
        }
    };
    let Some(rule) = scope
        .bind_sources
        .iter()
        .filter(|b| resolved.starts_with(lexical(&b.path)))
        .max_by_key(|b| b.path.as_os_str().len())
    else {
        let shown = if resolved != Path::new(source) {
            format!("{source} (resolves to {})", resolved.display())
        } else {
            source.to_string()
        };
        push(out, format!("{field}.source"), shown, allowed());
        return None;
    };
    // Conservative: any rw/rrw anywhere makes it writable (the top-level words are
    // applied after the recursive ones).
    let cleared = (opts.clear | opts.rec_clear) & RDONLY != 0;
    let top_read_only = !cleared && (opts.set | opts.rec_set) & RDONLY != 0;
    let read_only = top_read_only && (!opts.recursive_bind || opts.rec_set & RDONLY != 0);
    if !rule.writable && !read_only {
        let how = if opts.recursive_bind && top_read_only {
            "an rbind read-only only at its top (use rro)"
        } else {
            "a writable bind"
        };
        push(
            out,
            format!("{field}.options"),
            format!("{how} of {source}"),
            format!("{} read-only", rule.path.display()),
        );
    }
    Some(fd)
}

fn layers(scope: &Scope, bundle: &Bundle, out: &mut Found) {
    let Some(layers) = &bundle.layers else { return };
    let store = if layers.store.is_absolute() {
        layers.store.clone()
    } else {
        bundle.dir.join(&layers.store)
    };
    let resolved = std::fs::canonicalize(&store).unwrap_or_else(|_| lexical(&store));
    if !scope
        .layer_stores
        .iter()
        .any(|s| resolved.starts_with(lexical(s)))
    {
        let stores: Vec<String> = scope
            .layer_stores
            .iter()
            .map(|s| s.display().to_string())
            .collect();
        push(
            out,
            "left4me.layers.store",
            resolved.display().to_string(),
            list(&stores),
        );
    }
    for (i, layer) in layers.lower.iter().enumerate() {
        let v = serde_json::to_value(layer).unwrap_or(Value::Null);
        mappings(
            scope,
            &format!("left4me.layers.lower[{i}].uidMappings"),
            &v["uidMappings"],
            out,
        );
        mappings(
            scope,
            &format!("left4me.layers.lower[{i}].gidMappings"),
            &v["gidMappings"],
            out,
        );
    }
    for (name, path) in [("upper", &layers.upper), ("work", &layers.work)] {
        if path.is_absolute()
            || path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            push(
                out,
                format!("left4me.layers.{name}"),
                path.display().to_string(),
                "a directory inside the bundle",
            );
        }
    }
}

fn hooks(scope: &Scope, spec: &Value, out: &mut Found) {
    let Some(stages) = spec["hooks"].as_object() else {
        return;
    };
    for (stage, hooks) in stages {
        for (i, h) in hooks.as_array().into_iter().flatten().enumerate() {
            let path = PathBuf::from(h["path"].as_str().unwrap_or(""));
            let field = format!("hooks.{stage}[{i}].path");
            if !scope.hooks.contains(&path) {
                let allowed: Vec<String> = scope
                    .hooks
                    .iter()
                    .map(|h| h.display().to_string())
                    .collect();
                push(out, field, path.display().to_string(), list(&allowed));
            } else if let Err(why) = root_owned_chain(&path) {
                push(
                    out,
                    field,
                    format!("{} ({why})", path.display()),
                    "root-owned hooks, writable by root only",
                );
            }
        }
    }
}

/// The file and its directories are root's alone (no one else can replace what runs).
pub(super) fn root_owned_chain(path: &Path) -> Result<(), String> {
    let mut p = Some(path);
    while let Some(cur) = p {
        let meta = std::fs::symlink_metadata(cur).map_err(|e| format!("{}: {e}", cur.display()))?;
        if meta.file_type().is_symlink() {
            return Err(format!("{} is a symlink", cur.display()));
        }
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(format!("{} is not root's alone", cur.display()));
        }
        p = cur.parent();
    }
    Ok(())
}

fn resources(scope: &Scope, spec: &Value, out: &mut Found) {
    let r = &spec["linux"]["resources"];
    let c = &scope.resources;
    if let Some(max) = c.memory {
        match r["memory"]["limit"].as_i64() {
            Some(v) if v > 0 && v <= max => {}
            other => push(
                out,
                "linux.resources.memory.limit",
                other.map_or("no limit".into(), |v| v.to_string()),
                format!("at most {max}"),
            ),
        }
    }
    if let Some(max) = c.pids {
        match r["pids"]["limit"].as_i64() {
            Some(v) if v > 0 && v <= max => {}
            other => push(
                out,
                "linux.resources.pids.limit",
                other.map_or("no limit".into(), |v| v.to_string()),
                format!("at most {max}"),
            ),
        }
    }
    if let Some(max) = c.cpu_percent {
        let quota = r["cpu"]["quota"].as_i64().unwrap_or(-1);
        let period = r["cpu"]["period"].as_u64().unwrap_or(100_000).max(1);
        let percent = (quota > 0).then(|| quota as u64 * 100 / period);
        if percent.is_none_or(|p| p > max) {
            push(
                out,
                "linux.resources.cpu.quota",
                percent.map_or("no limit".into(), |p| format!("{p}% of a CPU")),
                format!("at most {max}%"),
            );
        }
    }
    for (key, value) in r["unified"].as_object().into_iter().flatten() {
        if !c.unified.iter().any(|k| k == key) {
            push(
                out,
                format!("linux.resources.unified.{key}"),
                value.to_string(),
                format!("keys {}", list(&c.unified)),
            );
        } else if let (Some(max), true) = (c.memory, key.starts_with("memory.")) {
            let v = value.as_str().and_then(|s| s.parse::<i64>().ok());
            if v.is_none_or(|v| v > max) {
                push(
                    out,
                    format!("linux.resources.unified.{key}"),
                    value.to_string(),
                    format!("at most {max}"),
                );
            }
        }
    }
}

fn cgroup_path(scope: &Scope, spec: &Value, out: &mut Found) {
    let path = spec["linux"]["cgroupsPath"].as_str().unwrap_or("");
    let p = Path::new(path);
    let parents: Vec<String> = scope
        .cgroup_parents
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let allowed = || {
        format!(
            "{}{}",
            if scope.relative_cgroups {
                "relative paths, "
            } else {
                ""
            },
            list(&parents)
        )
    };
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        push(out, "linux.cgroupsPath", path, allowed());
    } else if !p.is_absolute() {
        if !scope.relative_cgroups {
            push(
                out,
                "linux.cgroupsPath",
                format!("{path:?} (beside the runtime's group)"),
                allowed(),
            );
        }
    } else if !scope
        .cgroup_parents
        .iter()
        .any(|parent| p.starts_with(parent) && p != parent)
    {
        push(out, "linux.cgroupsPath", path, allowed());
    }
}

fn devices(scope: &Scope, spec: &Value, out: &mut Found) {
    let linux = &spec["linux"];
    let allowed = || {
        let v: Vec<String> = scope
            .devices
            .iter()
            .map(|d| format!("{} {} {}:{}", d.path.display(), d.kind, d.major, d.minor))
            .collect();
        list(&v)
    };
    for (i, d) in linux["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let ok = scope.devices.iter().any(|a| {
            d["path"].as_str() == a.path.to_str()
                && d["type"] == a.kind.as_str()
                && d["major"].as_i64() == Some(a.major)
                && d["minor"].as_i64() == Some(a.minor)
        });
        if !ok {
            push(out, format!("linux.devices[{i}]"), d.to_string(), allowed());
        }
    }
    for (i, rule) in linux["resources"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if rule["allow"] != Value::Bool(true) {
            continue;
        }
        let ok = scope.devices.iter().any(|a| {
            rule["type"].as_str().is_some_and(|t| t == a.kind)
                && rule["major"].as_i64() == Some(a.major)
                && rule["minor"].as_i64() == Some(a.minor)
        });
        if !ok {
            push(
                out,
                format!("linux.resources.devices[{i}]"),
                rule.to_string(),
                allowed(),
            );
        }
    }
}

fn sysctls(scope: &Scope, spec: &Value, out: &mut Found) {
    for key in spec["linux"]["sysctl"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        if !scope.sysctls.iter().any(|s| s == key) {
            push(
                out,
                format!("linux.sysctl.{key}"),
                key.clone(),
                list(&scope.sysctls),
            );
        }
    }
}

/// Annotations the runtime acts on.
const BEHAVIOUR: [&str; 3] = [
    crate::cgroups::pinning::ANNOTATION,
    crate::cgroups::netdeny::ANNOTATION,
    crate::notify::ANNOTATION,
];

fn annotations(scope: &Scope, spec: &Value, out: &mut Found) {
    for (key, value) in spec["annotations"].as_object().into_iter().flatten() {
        if BEHAVIOUR.contains(&key.as_str()) && !scope.annotations.iter().any(|a| a == key) {
            push(
                out,
                format!("annotations.{key}"),
                value.to_string(),
                format!("annotations {}", list(&scope.annotations)),
            );
        }
    }
}

fn masked(scope: &Scope, spec: &Value, out: &mut Found) {
    let have: Vec<&str> = spec["linux"]["maskedPaths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let missing: Vec<String> = scope
        .masked_paths
        .iter()
        .filter(|p| !have.contains(&p.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        push(
            out,
            "linux.maskedPaths",
            format!("leaving {} unmasked", missing.join(", ")),
            "every path of the policy's maskedPaths masked",
        );
    }
}
