//! The trust boundary: a root-owned policy for bundles that less trusted users write
//! (left4me's web app runs as uid 980 and writes its instances' config.json). The policy
//! names bundle directories (scopes) and what bundles there may ask for; `create` checks
//! a bundle against its scope before anything exists and refuses it with every violation
//! listed. Without a policy file, bundles are trusted as runc trusts them.

mod file;
mod rules;
mod seccomp;

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

pub use file::{load, DEFAULT_FILE};

/// The policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Where it was read from (for messages).
    #[serde(skip)]
    pub path: PathBuf,
    pub scopes: Vec<Scope>,
}

/// What bundles under some directories may ask for. Every field has the restrictive
/// default: what a scope does not allow, its bundles cannot have.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scope {
    pub name: String,
    /// Bundle directories governed by this scope (a bundle is governed when its path, as
    /// given or resolved, lies under one of them).
    pub bundles: Vec<PathBuf>,
    /// Layer stores `left4me.layers.store` may name.
    #[serde(default)]
    pub layer_stores: Vec<PathBuf>,
    /// Host paths bind mounts may come from (the path or anything under it).
    #[serde(default)]
    pub bind_sources: Vec<BindSource>,
    /// Filesystem types mounts may have besides proc, sysfs, tmpfs, devpts, mqueue,
    /// cgroup and cgroup2 (bind mounts are governed by `bindSources`).
    #[serde(default)]
    pub filesystems: Vec<String>,
    #[serde(default)]
    pub user: UserRule,
    /// The most capabilities any set (bounding, effective, permitted, inheritable,
    /// ambient) may hold.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `process.noNewPrivileges` must be true.
    #[serde(default = "yes")]
    pub no_new_privileges: bool,
    /// `linux.seccomp` must be at least as strict as one of these profiles (names of the
    /// shipped profiles, or absolute paths of root-owned profile files).
    #[serde(default)]
    pub seccomp: Option<Vec<String>>,
    /// Namespaces the container must have of its own (no `path`).
    #[serde(default = "default_new_namespaces")]
    pub new_namespaces: Vec<String>,
    /// Namespaces the container may share with the host (left out of the config).
    #[serde(default)]
    pub host_namespaces: Vec<String>,
    /// Hook executables allowed (each must be root-owned and not writable by others).
    #[serde(default)]
    pub hooks: Vec<PathBuf>,
    #[serde(default)]
    pub resources: Ceilings,
    /// Absolute cgroups a container may be placed under; relative `cgroupsPath`s (beside
    /// the runtime's own group) are allowed when `relativeCgroups` is true.
    #[serde(default)]
    pub cgroup_parents: Vec<PathBuf>,
    #[serde(default = "yes")]
    pub relative_cgroups: bool,
    /// Device nodes (`linux.devices`) and device-access rules allowed.
    #[serde(default)]
    pub devices: Vec<DeviceRule>,
    #[serde(default)]
    pub sysctls: Vec<String>,
    /// Annotations that change what the runtime does (`org.left4me.cpuset`,
    /// `org.left4me.network`, `org.left4me.notify`) that bundles may set.
    #[serde(default)]
    pub annotations: Vec<String>,
    /// The highest hard limit each `process.rlimits` type may ask for; a type not named
    /// here may not go above the runtime's own hard limit (which, for RLIMIT_NICE and
    /// RLIMIT_RTPRIO, keeps realtime and raised priorities out of reach).
    #[serde(default)]
    pub rlimits: std::collections::BTreeMap<String, u64>,
    /// The lowest `process.oomScoreAdj` allowed.
    #[serde(default)]
    pub oom_score_adj_min: i32,
    /// Paths `linux.maskedPaths` must include (default: runc's).
    #[serde(default = "default_masked")]
    pub masked_paths: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindSource {
    pub path: PathBuf,
    #[serde(default)]
    pub writable: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserRule {
    /// The container must have a user namespace.
    #[serde(default)]
    pub namespace_required: bool,
    /// Host uids/gids the process may run as (without a user namespace) or that mappings
    /// (user namespace, idmapped layers and mounts) may map onto.
    #[serde(default)]
    pub host_ids: Vec<IdRange>,
    /// `left4me.userns` automatic blocks are allowed.
    #[serde(default)]
    pub automatic_blocks: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdRange {
    pub start: u32,
    #[serde(default = "one")]
    pub size: u32,
}

impl IdRange {
    fn contains(&self, start: u32, size: u32) -> bool {
        let end = u64::from(start) + u64::from(size);
        start >= self.start && end <= u64::from(self.start) + u64::from(self.size)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ceilings {
    /// `linux.resources.memory.limit` must be set and at most this (bytes).
    pub memory: Option<i64>,
    /// `linux.resources.pids.limit` must be set and at most this.
    pub pids: Option<i64>,
    /// `linux.resources.cpu` quota/period must be set and at most this percent of a CPU.
    pub cpu_percent: Option<u64>,
    /// `linux.resources.unified` keys allowed (memory.* values stay under `memory`).
    #[serde(default)]
    pub unified: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceRule {
    pub path: PathBuf,
    #[serde(rename = "type")]
    pub kind: String,
    pub major: i64,
    pub minor: i64,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_new_namespaces() -> Vec<String> {
    ["pid", "ipc", "uts", "mount", "cgroup"]
        .map(String::from)
        .to_vec()
}
fn default_masked() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
    ]
    .map(String::from)
    .to_vec()
}

/// One thing a bundle asks for that its scope does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The config field (JSON path).
    pub field: String,
    pub asked: String,
    pub allowed: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: asks {}, the policy allows {}",
            self.field, self.asked, self.allowed
        )
    }
}

impl Policy {
    /// The scope governing a bundle at `given` (as the caller named it, made absolute)
    /// whose directory resolves to `resolved`.
    pub fn scope_for(&self, given: &Path, resolved: &Path) -> Option<&Scope> {
        let given = lexical(given);
        self.scopes.iter().find(|s| {
            s.bundles
                .iter()
                .any(|b| given.starts_with(lexical(b)) || resolved.starts_with(lexical(b)))
        })
    }
}

impl Scope {
    /// Every violation of this scope by `bundle` (empty: allowed), and the descriptors
    /// of what was checked.
    pub fn check(&self, bundle: &crate::spec::Bundle) -> (Vec<Violation>, Checked) {
        let mut checked = Checked::default();
        let violations = rules::check(self, bundle, &mut checked);
        (violations, checked)
    }
}

/// What a policy check opened and approved: the rootfs and the bind sources, to be
/// mounted from these descriptors rather than looked up again by path.
#[derive(Debug, Default)]
pub struct Checked {
    pub root: Option<std::os::fd::OwnedFd>,
    pub binds: Vec<(usize, std::os::fd::OwnedFd)>,
}

impl Checked {
    pub fn bind_source(&self, index: usize) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.binds
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, fd)| fd.as_fd())
    }
}

/// `path` made absolute and without `.`/`..` (by the words, not the filesystem).
pub fn lexical(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The error `create` returns: every violation, on one line.
pub fn refusal(policy: &Policy, scope: &Scope, violations: &[Violation]) -> crate::error::Error {
    let list: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    crate::error::Error::Policy(format!(
        "refused by policy {} (scope {:?}), {} violation(s): {}",
        policy.path.display(),
        scope.name,
        violations.len(),
        list.join("; ")
    ))
}

/// `create`'s check: the bundle `given` (as named on the command line), loaded as
/// `bundle`, against the policy's scope for it.
/// `Ok(None)`: no scope governs the bundle.
pub fn enforce(
    policy: &Policy,
    given: &Path,
    bundle: &crate::spec::Bundle,
) -> crate::error::Result<Option<Checked>> {
    let Some(scope) = policy.scope_for(given, &bundle.dir) else {
        return Ok(None);
    };
    let (violations, checked) = scope.check(bundle);
    if violations.is_empty() {
        Ok(Some(checked))
    } else {
        Err(refusal(policy, scope, &violations))
    }
}

/// What `policy check` prints, and whether the bundle would be allowed.
pub struct Report {
    pub text: String,
    pub allowed: bool,
}

/// `policy check --bundle DIR`.
pub fn report(policy: Option<&Policy>, dir: &Path) -> crate::error::Result<Report> {
    use std::fmt::Write;
    let bundle = crate::spec::Bundle::load(dir)?;
    let spec = serde_json::to_value(&bundle.spec).unwrap_or_default();
    let mut text = String::new();
    let _ = writeln!(text, "bundle        {}", bundle.dir.display());
    summary(&bundle, &spec, &mut text);
    let Some(policy) = policy else {
        let _ = writeln!(
            text,
            "policy        none: the bundle is trusted as runc trusts it"
        );
        return Ok(Report {
            text,
            allowed: true,
        });
    };
    let Some(scope) = policy.scope_for(dir, &bundle.dir) else {
        let _ = writeln!(
            text,
            "policy        {}: no scope covers this bundle (trusted)",
            policy.path.display()
        );
        return Ok(Report {
            text,
            allowed: true,
        });
    };
    let (violations, _) = scope.check(&bundle);
    let _ = writeln!(
        text,
        "policy        {} scope {:?}: {}",
        policy.path.display(),
        scope.name,
        if violations.is_empty() {
            "ALLOWED".to_string()
        } else {
            format!("REFUSED, {} violation(s)", violations.len())
        }
    );
    for v in &violations {
        let _ = writeln!(text, "  - {v}");
    }
    Ok(Report {
        text,
        allowed: violations.is_empty(),
    })
}

/// What the bundle asks for, in the policy's terms.
fn summary(bundle: &crate::spec::Bundle, spec: &serde_json::Value, text: &mut String) {
    use std::fmt::Write;
    let p = &spec["process"];
    let linux = &spec["linux"];
    let ns: Vec<String> = linux["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| match n["path"].as_str() {
            Some(path) => format!("{} (joins {path})", n["type"].as_str().unwrap_or("?")),
            None => n["type"].as_str().unwrap_or("?").to_string(),
        })
        .collect();
    let caps: std::collections::BTreeSet<&str> = [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ]
    .iter()
    .flat_map(|set| p["capabilities"][*set].as_array().into_iter().flatten())
    .filter_map(|c| c.as_str())
    .collect();
    let binds: Vec<String> = spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["type"] == "bind"
                || m["options"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
        })
        .map(|m| {
            format!(
                "{} -> {}",
                m["source"].as_str().unwrap_or("?"),
                m["destination"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let hooks: usize = spec["hooks"].as_object().map_or(0, |h| {
        h.values().map(|v| v.as_array().map_or(0, Vec::len)).sum()
    });
    let r = &linux["resources"];
    let _ = writeln!(
        text,
        "user          {}:{}",
        p["user"]["uid"], p["user"]["gid"]
    );
    let _ = writeln!(
        text,
        "capabilities  {}",
        if caps.is_empty() {
            "none".into()
        } else {
            caps.into_iter().collect::<Vec<_>>().join(" ")
        }
    );
    let _ = writeln!(text, "no_new_privs  {}", p["noNewPrivileges"]);
    let _ = writeln!(text, "namespaces    {}", ns.join(" "));
    let _ = writeln!(
        text,
        "bind mounts   {}",
        if binds.is_empty() {
            "none".into()
        } else {
            binds.join(", ")
        }
    );
    if let Some(l) = &bundle.layers {
        let _ = writeln!(
            text,
            "layers        store {}, {} lower",
            l.store.display(),
            l.lower.len()
        );
    }
    let _ = writeln!(text, "hooks         {hooks}");
    let _ = writeln!(
        text,
        "resources     memory {} pids {} cpu {}/{}",
        r["memory"]["limit"], r["pids"]["limit"], r["cpu"]["quota"], r["cpu"]["period"]
    );
    let _ = writeln!(text, "cgroupsPath   {}", linux["cgroupsPath"]);
    let _ = writeln!(
        text,
        "seccomp       {}",
        if linux["seccomp"].is_null() {
            "none"
        } else {
            "a filter"
        }
    );
}
