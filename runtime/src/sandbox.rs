//! `sandbox build`: runs a user's bash script in the script-sandbox bundle
//! (`bundles/script-sandbox/config.json`, embedded) to fill an overlay directory, the way
//! left4me builds map and plugin overlays: read-only host system, the script read-only at
//! `/script.sh`, the overlay read-write at `/overlay` (the working directory), a private
//! `/tmp`, an unprivileged uid without capabilities, the `sandbox` seccomp profile,
//! public-only network, memory/tasks/CPU limits, a wall-time limit, and a size check of
//! the overlay afterwards. The bundle is written into a private work directory, run in
//! the foreground, and removed whatever happens.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::container::{create::CreateOptions, run, Paths};
use crate::error::{Error, IoContext, Result};

/// The bundle template, also usable as is (see docs/left4me.md).
pub const TEMPLATE: &str = include_str!("../../bundles/script-sandbox/config.json");
const TIMEOUT_ANNOTATION: &str = "org.left4me.build.timeout";
const SIZE_ANNOTATION: &str = "org.left4me.build.sizeLimit";

/// What `sandbox build` was asked for; `None` keeps the template's value.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub id: String,
    pub script: PathBuf,
    pub overlay: PathBuf,
    pub resolv_conf: PathBuf,
    /// The build's uid and gid on the host (left4me: 981); the overlay belongs to it.
    pub uid: u32,
    /// Where the bundle is written while the build runs.
    pub work: PathBuf,
    pub timeout: Option<Duration>,
    pub memory: Option<u64>,
    pub tasks: Option<i64>,
    pub cpu_percent: Option<u32>,
    /// `cpuset.cpus` (left4me: the system cores); default: inherited from the parent.
    pub cpus: Option<String>,
    pub size_limit: Option<u64>,
    /// An absolute cgroup to build in; default: next to the runtime's own group (the
    /// transient unit in `l4d2-build.slice`).
    pub cgroup_parent: Option<String>,
    /// Build without the limits whose cgroup controller this host lacks (saying so).
    pub skip_unavailable_limits: bool,
}

/// `sandbox build`: returns the script's exit status (0: the overlay is built and
/// within its size limit). Limits that ended the build are errors.
pub fn build(paths: &Paths, opts: &BuildOptions) -> Result<u8> {
    crate::state::validate_id(&opts.id)?;
    if crate::state::read(&paths.root, &opts.id).is_ok() {
        return Err(Error::AlreadyExists(opts.id.clone()));
    }
    let script = regular_file("--script", &opts.script)?;
    let resolv = regular_file("--resolv-conf", &opts.resolv_conf)?;
    let mut config: Value = serde_json::from_str(TEMPLATE).expect("the template is JSON");
    // Limits first: a build refused for them leaves no overlay directory behind.
    limits(&mut config, opts);
    drop_unavailable_limits(&mut config, opts.skip_unavailable_limits)?;
    let overlay = overlay_dir(&opts.overlay, opts.uid)?;
    let size_limit = match opts.size_limit {
        Some(s) => s,
        None => parse_size(SIZE_ANNOTATION, annotation(&config, SIZE_ANNOTATION)?)?,
    };
    let timeout = match opts.timeout {
        Some(t) => t,
        None => crate::container::events::parse_duration(
            TIMEOUT_ANNOTATION,
            annotation(&config, TIMEOUT_ANNOTATION)?,
        )?,
    };
    customize(&mut config, opts, &script, &resolv, &overlay);
    let bundle = WorkBundle::write(&opts.work, &opts.id, &config, opts.uid)?;
    let started = Instant::now();
    let create = CreateOptions {
        bundle: bundle.dir.clone(),
        pid_file: None,
        console_socket: None,
        no_pivot: false,
        preserve_fds: 0,
        own_console: false,
        notify_relay: false,
    };
    // Cancelling a build (systemctl stop: SIGTERM) ends it at once, all of it.
    let report = run::foreground(paths, &opts.id, &create, false, Some(timeout), true)?;
    drop(bundle);
    let took = started.elapsed();
    let id = &opts.id;
    if report.timed_out {
        return Err(Error::Build(format!(
            "build {id}: stopped at its wall-time limit of {}",
            run::human_duration(timeout)
        )));
    }
    if report.cancelled {
        return Err(Error::Build(format!(
            "build {id}: cancelled (stop signal); the overlay is incomplete"
        )));
    }
    if let Some((_, max)) = report.oom {
        return Err(Error::Build(format!(
            "build {id}: the script ran out of memory (limit {max} bytes, no swap)"
        )));
    }
    if report.code != 0 {
        let tasks = if report.task_limit_hits > 0 {
            " (it hit the task limit: fork failed)"
        } else {
            ""
        };
        eprintln!(
            "left4me-runtime: sandbox build: build {id}: the script failed with exit status {}{tasks}",
            report.code
        );
        return Ok(report.code.clamp(1, 255) as u8);
    }
    let used = disk_usage(&overlay)?;
    if used > size_limit {
        return Err(Error::Build(format!(
            "build {id}: {} holds {} after the build, over the limit of {}; the overlay is \
             left for inspection and must not be used",
            overlay.display(),
            human_size(used),
            human_size(size_limit)
        )));
    }
    eprintln!(
        "left4me-runtime: sandbox build: build {id}: done in {:.1}s, {} holds {}",
        took.as_secs_f64(),
        overlay.display(),
        human_size(used)
    );
    Ok(0)
}

fn annotation<'a>(config: &'a Value, key: &str) -> Result<&'a str> {
    config["annotations"][key]
        .as_str()
        .ok_or_else(|| Error::config(format!("annotations.{key}"), "missing in the template"))
}

fn regular_file(flag: &str, path: &Path) -> Result<PathBuf> {
    let canonical = std::fs::canonicalize(path).at(path)?;
    let meta = std::fs::metadata(&canonical).at(&canonical)?;
    if !meta.is_file() {
        return Err(Error::Usage(format!(
            "{flag} {}: not a regular file",
            path.display()
        )));
    }
    Ok(canonical)
}

/// The overlay directory, created for the build user when missing; an existing one must
/// already belong to it (the build must not write into someone else's files).
fn overlay_dir(path: &Path, uid: u32) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(path).at(path)?;
            std::os::unix::fs::chown(path, Some(uid), Some(uid)).at(path)?;
        }
        Err(e) => return Err(Error::io(path, e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(Error::Usage(format!(
                "--overlay {}: not a directory",
                path.display()
            )))
        }
        Ok(meta) if meta.uid() != uid => {
            return Err(Error::Usage(format!(
                "--overlay {}: owned by uid {}, but the build runs as uid {uid} (--uid)",
                path.display(),
                meta.uid()
            )))
        }
        Ok(_) => {}
    }
    std::fs::canonicalize(path).at(path)
}

/// Fills the template: who runs, what is mounted from where, the group, the profile.
fn customize(
    config: &mut Value,
    opts: &BuildOptions,
    script: &Path,
    resolv: &Path,
    overlay: &Path,
) {
    config["process"]["user"] = json!({"uid": opts.uid, "gid": opts.uid});
    let sources = [
        ("/script.sh", script),
        ("/etc/resolv.conf", resolv),
        ("/overlay", overlay),
    ];
    let mounts = config["mounts"].as_array_mut().expect("template mounts");
    for m in mounts.iter_mut() {
        if let Some((_, src)) = sources.iter().find(|(d, _)| m["destination"] == *d) {
            m["source"] = json!(src);
        }
    }
    // Host system parts this host does not have (no /lib64, no ca-certificates).
    mounts.retain(|m| {
        m["type"] != "bind"
            || m["source"]
                .as_str()
                .is_some_and(|s| !s.starts_with('/') || Path::new(s).exists())
    });
    config["linux"]["cgroupsPath"] = json!(match &opts.cgroup_parent {
        Some(parent) => format!("{}/{}", parent.trim_end_matches('/'), opts.id),
        None => format!("build-{}", opts.id),
    });
    config["linux"]["seccomp"] =
        serde_json::from_str(crate::seccomp::profiles::SANDBOX).expect("embedded profile");
    config["annotations"]["org.left4me.build"] = json!(opts.id);
}

/// The limits asked for on the command line over the template's.
fn limits(config: &mut Value, opts: &BuildOptions) {
    let resources = &mut config["linux"]["resources"];
    if let Some(bytes) = opts.memory {
        resources["memory"] = json!({"limit": bytes, "swap": bytes});
    }
    if let Some(tasks) = opts.tasks {
        resources["pids"] = json!({ "limit": tasks });
    }
    if let Some(pct) = opts.cpu_percent {
        resources["cpu"]["quota"] = json!(u64::from(pct) * 1000);
        resources["cpu"]["period"] = json!(100_000);
    }
    if let Some(cpus) = &opts.cpus {
        resources["cpu"]["cpus"] = json!(cpus);
    }
}

/// Limits whose controller the cgroup2 root does not offer: an error, or with
/// `--skip-unavailable-limits` a warning naming each limit dropped.
fn drop_unavailable_limits(config: &mut Value, skip: bool) -> Result<()> {
    let available = crate::cgroups::hierarchy()
        .and_then(|h| std::fs::read_to_string(h.join("cgroup.controllers")).ok())
        .unwrap_or_default();
    let available: HashSet<&str> = available.split_whitespace().collect();
    let resources = &mut config["linux"]["resources"];
    let mut dropped = Vec::new();
    for (key, controller) in [("memory", "memory"), ("pids", "pids"), ("cpu", "cpu")] {
        let Some(section) = resources.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let needed = if key == "cpu" && section.get("cpus").is_some() {
            vec!["cpu", "cpuset"]
        } else {
            vec![controller]
        };
        if needed.iter().all(|c| available.contains(c)) {
            continue;
        }
        if !skip {
            return Err(Error::Unsupported(format!(
                "linux.resources.{key}: this host's cgroup2 hierarchy has no {} controller; \
                 the build would run without its {key} limit (--skip-unavailable-limits \
                 builds anyway)",
                needed.join("/")
            )));
        }
        dropped.push(format!("{key} {section}"));
        resources.as_object_mut().expect("object").remove(key);
    }
    if !dropped.is_empty() {
        eprintln!(
            "left4me-runtime: sandbox build: WARNING: no cgroup v2 controller for these limits \
             on this host, building without them: {}",
            dropped.join("; ")
        );
    }
    Ok(())
}

/// The bundle directory of one build, removed when dropped.
struct WorkBundle {
    dir: PathBuf,
}

impl WorkBundle {
    fn write(work: &Path, id: &str, config: &Value, uid: u32) -> Result<WorkBundle> {
        std::fs::create_dir_all(work).at(work)?;
        std::fs::set_permissions(work, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .at(work)?;
        let dir = work.join(id);
        // A bundle left by a crashed build of the same id (its container is gone: the
        // id was checked to be free).
        if dir.exists() {
            std::fs::remove_dir_all(&dir).at(&dir)?;
        }
        let bundle = WorkBundle { dir };
        let root = bundle.dir.join("rootfs");
        std::fs::create_dir_all(root.join("etc")).at(&root)?;
        let files = [
            (
                "etc/passwd",
                format!(
                    "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                     builder:x:{uid}:{uid}:left4me build:/tmp:/bin/bash\n"
                ),
            ),
            ("etc/group", format!("root:x:0:\nbuilder:x:{uid}:\n")),
            ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n".into()),
        ];
        for (rel, text) in files {
            std::fs::write(root.join(rel), text).at(root.join(rel))?;
        }
        let text = serde_json::to_vec_pretty(config).expect("JSON");
        crate::state::write_atomic(&bundle.dir.join(crate::spec::CONFIG_FILE), &text, 0o644)?;
        Ok(bundle)
    }
}

impl Drop for WorkBundle {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            crate::log::warn(&format!("removing {}: {e}", self.dir.display()));
        }
    }
}

/// Bytes of disk the tree uses (as `du` counts: allocated blocks, hard links once, not
/// following symlinks, not crossing into other filesystems).
pub fn disk_usage(root: &Path) -> Result<u64> {
    let top = std::fs::symlink_metadata(root).at(root)?;
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let meta = entry.metadata().at(entry.path())?;
            if meta.dev() != top.dev() {
                continue;
            }
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total + top.blocks() * 512)
}

/// `20G`, `4GiB`, `512M`, `100k`, `4096`: binary units.
pub fn parse_size(flag: &str, text: &str) -> Result<u64> {
    let bad = || Error::Usage(format!("{flag} {text:?}: expected e.g. 20G, 512M, 4096"));
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("f", "20G").unwrap(), 20 << 30);
        assert_eq!(parse_size("f", "4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("f", "512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("f", "4096").unwrap(), 4096);
        assert!(parse_size("f", "-1G").is_err());
        assert!(parse_size("f", "lots").is_err());
        assert!(parse_size("f", "99999999999T").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(20 << 30), "20.0 GiB");
        assert_eq!(human_size(1536), "1.5 KiB");
    }

    #[test]
    fn the_template_is_a_valid_config_with_the_left4me_defaults() {
        let mut config: Value = serde_json::from_str(TEMPLATE).unwrap();
        let opts = BuildOptions {
            id: "t".into(),
            uid: 981,
            skip_unavailable_limits: true,
            ..Default::default()
        };
        limits(&mut config, &opts);
        drop_unavailable_limits(&mut config, true).unwrap();
        customize(
            &mut config,
            &opts,
            Path::new("/etc/hostname"),
            Path::new("/etc/hostname"),
            Path::new("/tmp"),
        );
        let problems = crate::edit::problems(&config, None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config["process"]["user"]["uid"], 981);
        assert_eq!(config["process"]["cwd"], "/overlay");
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(
            parse_size("", annotation(&config, SIZE_ANNOTATION).unwrap()).unwrap(),
            20 << 30
        );
        let overlay = config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/overlay")
            .unwrap();
        assert_eq!(overlay["source"], "/tmp");
    }

    #[test]
    fn disk_usage_counts_hard_links_once() {
        let dir = std::env::temp_dir().join(format!("l4m-du-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a"), vec![1u8; 256 * 1024]).unwrap();
        let one = disk_usage(&dir).unwrap();
        std::fs::hard_link(dir.join("sub/a"), dir.join("b")).unwrap();
        assert_eq!(disk_usage(&dir).unwrap(), one);
        assert!(one >= 256 * 1024, "{one}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
