//! Read-only commands: `state`, `list`, `ps`, `features`.

use std::path::Path;

use nix::unistd::Pid;
use serde_json::{json, Value};

use super::Paths;
use crate::cgroups::Cgroup;
use crate::error::Result;
use crate::state::{self, Status};

pub fn state_json(paths: &Paths, id: &str) -> Result<Value> {
    Ok(state::read(&paths.root, id)?.oci_json())
}

pub fn list(paths: &Paths) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for id in state::list_ids(&paths.root)? {
        match state::read(&paths.root, &id) {
            Ok(st) => {
                let mut v = st.oci_json();
                v["owner"] = Value::from(owner_name(st.owner));
                out.push(v)
            }
            Err(e) => crate::log::warn(&format!("list: {id}: {e}")),
        }
    }
    Ok(out)
}

/// The user name of `uid` on the host, or `#UID` (runc's `list` owner column).
fn owner_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| passwd_name(&passwd, uid))
        .unwrap_or_else(|| format!("#{uid}"))
}

/// The name of `uid` in a passwd(5) text. Read directly, as runc's Go code does, not
/// through NSS: the runtime is linked statically (hack/build) and loads no NSS modules;
/// a user known only to a directory service shows as `#UID`.
fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid && !name.is_empty() && !name.starts_with(['#', '+', '-']))
            .then(|| name.to_owned())
    })
}

/// A table like runc's: `ID PID STATUS BUNDLE CREATED OWNER`.
pub fn list_table(items: &[Value]) -> String {
    let mut text = format!(
        "{:<20} {:<8} {:<10} {:<40} {:<32} {}\n",
        "ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"
    );
    for v in items {
        text.push_str(&format!(
            "{:<20} {:<8} {:<10} {:<40} {:<32} {}\n",
            v["id"].as_str().unwrap_or(""),
            v["pid"],
            v["status"].as_str().unwrap_or(""),
            v["bundle"].as_str().unwrap_or(""),
            v["created"].as_str().unwrap_or(""),
            v["owner"].as_str().unwrap_or("")
        ));
    }
    text
}

/// Processes of the container: its cgroup's members, or (without a cgroup) every process
/// in its PID namespace.
pub fn pids(paths: &Paths, id: &str) -> Result<Vec<Pid>> {
    let st = state::read(&paths.root, id)?;
    if st.status() == Status::Stopped {
        return Ok(Vec::new());
    }
    if let Some(dir) = &st.cgroup {
        return Cgroup { dir: dir.clone() }.pids();
    }
    let Some(init) = st.init else {
        return Ok(Vec::new());
    };
    let ns = crate::namespaces::ns_inode(&init.pid.to_string(), "pid")?;
    let mut pids: Vec<Pid> = std::fs::read_dir("/proc")
        .map_err(|e| crate::error::Error::io("/proc", e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| crate::namespaces::ns_inode(&pid.to_string(), "pid").is_ok_and(|i| i == ns))
        .map(Pid::from_raw)
        .collect();
    pids.sort();
    Ok(pids)
}

pub fn ps_table(pids: &[Pid]) -> String {
    let mut text = format!("{:>8} {:>8} {:<5} CMD\n", "PID", "PPID", "STAT");
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
        let mut fields = after.split(' ');
        let state = fields.next().unwrap_or("?");
        let ppid = fields.next().unwrap_or("?");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        text.push_str(&format!(
            "{pid:>8} {ppid:>8} {state:<5} {}\n",
            cmd.trim_end()
        ));
    }
    text
}

/// The OCI features document: what this runtime understands.
pub fn features() -> Value {
    let mount_options = [
        "async",
        "atime",
        "bind",
        "defaults",
        "dev",
        "diratime",
        "exec",
        "noatime",
        "nodev",
        "nodiratime",
        "noexec",
        "norelatime",
        "nostrictatime",
        "nosuid",
        "nosymfollow",
        "private",
        "rprivate",
        "rbind",
        "relatime",
        "ro",
        "rw",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "strictatime",
        "suid",
        "symfollow",
        "unbindable",
        "runbindable",
        "rro",
        "rrw",
        "rnosuid",
        "rsuid",
        "rnodev",
        "rdev",
        "rnoexec",
        "rexec",
        "rnodiratime",
        "rdiratime",
        "rrelatime",
        "rnorelatime",
        "ratime",
        "rnoatime",
        "rstrictatime",
        "rnostrictatime",
        "rnosymfollow",
        "rsymfollow",
    ];
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.1",
        "hooks": [],
        "mountOptions": mount_options.to_vec(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": false, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "archs": ["SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"],
                "knownFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {
            "org.opencontainers.runtime-spec.features.runtime": "left4me-runtime",
            "org.left4me.runtime.version": env!("CARGO_PKG_VERSION")
        }
    })
}

/// Writes config.json for `spec`, refusing to overwrite one.
pub fn write_spec(bundle: &Path, rootless: bool) -> Result<()> {
    let path = bundle.join(crate::spec::CONFIG_FILE);
    if path.exists() {
        return Err(crate::error::Error::Usage(format!(
            "{} exists: remove it first",
            path.display()
        )));
    }
    let config = if rootless {
        crate::spec::rootless_config(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    } else {
        crate::spec::default_config()
    };
    let text = serde_json::to_string_pretty(&config).expect("a JSON value serializes");
    state::write_atomic(&path, format!("{text}\n").as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::passwd_name;

    #[test]
    fn passwd_lookup_takes_the_first_entry_with_the_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# a comment:x:5:5\n\
                      +nis:x:7:7::/:\nsrcds:x:980:980::/home/srcds:/bin/false\n\
                      alias:x:980:980::/:\nbroken:x:notanumber:0::/:\n";
        assert_eq!(passwd_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(passwd_name(passwd, 980).as_deref(), Some("srcds"));
        assert_eq!(passwd_name(passwd, 5), None);
        assert_eq!(passwd_name(passwd, 7), None);
        assert_eq!(passwd_name(passwd, 1000), None);
        assert_eq!(passwd_name("", 0), None);
    }
}
