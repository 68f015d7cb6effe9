//! `instance init`: a left4me instance spec becomes a game-server bundle (layers in
//! spec order over the installation, cfgs staged into the upper layer, a hardened
//! config), which then runs the stand-in srcds and answers A2S over loopback. On this
//! host, limits whose controller is missing and a negative oomScoreAdj (no
//! CAP_SYS_RESOURCE) are taken out with `config` first; the VM runs the bundle as is.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use left4me_runtime_tests::*;
use serde_json::Value;

fn init(dir: &Path, name: &str, spec: &str) -> std::process::Output {
    std::fs::create_dir_all(dir).unwrap();
    let spec_file = dir.join(format!("{name}.yaml"));
    std::fs::write(&spec_file, spec).unwrap();
    let mut cmd = Command::new(runtime_bin());
    cmd.args(["instance", "init", name, "--spec"])
        .arg(&spec_file)
        .arg("--store")
        .arg(l4d2_store())
        .arg("--instances")
        .arg(dir.join("instances"));
    run_captured(&mut cmd)
}

#[test]
fn a_spec_becomes_a_hardened_bundle_with_staged_cfgs() {
    if !can_run() {
        return;
    }
    let dir = scratch().join(format!("instance-{}", std::process::id()));
    let spec = "port: 27123\noverlays:\n  - path: config\n    alias: comp\n  - map\n\
                arguments: [\"-tickrate\", \"100\"]\nconfig:\n  - hostname \"from the spec\"\n";
    ok(&init(&dir, "alpha", spec));
    let inst = dir.join("instances/alpha");
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(inst.join("config.json")).unwrap()).unwrap();
    let args: Vec<&str> = c["process"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "/srcds_run",
            "-game",
            "left4dead2",
            "+ip",
            "0.0.0.0",
            "+hostport",
            "27123",
            "-tickrate",
            "100"
        ]
    );
    assert_eq!(c["process"]["user"]["uid"], 980);
    assert_eq!(c["process"]["capabilities"], serde_json::json!({}));
    assert_eq!(c["process"]["noNewPrivileges"], true);
    assert_eq!(c["process"]["oomScoreAdj"], -200);
    assert_eq!(c["process"]["cwd"], "/left4dead2");
    assert_eq!(c["linux"]["resources"]["memory"]["limit"], 2_147_483_648i64);
    assert_eq!(c["linux"]["resources"]["pids"]["limit"], 256);
    assert_eq!(
        c["linux"]["resources"]["unified"]["memory.high"],
        "1610612736"
    );
    assert_eq!(c["annotations"]["org.left4me.cpuset"], "auto");
    assert!(c["linux"]["seccomp"]["architectures"]
        .to_string()
        .contains("SCMP_ARCH_X86\""));
    assert!(
        !c["linux"]["namespaces"].to_string().contains("network"),
        "host network expected"
    );
    let lower: Vec<&str> = c["left4me"]["layers"]["lower"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        lower,
        ["overlays/config", "overlays/map", "installation", "base"]
    );
    // The script-built overlay (uid 981) is idmapped to the service user.
    assert_eq!(
        c["left4me"]["layers"]["lower"][0]["uidMappings"][0]["hostID"],
        980
    );
    let cfg = inst.join("upper/left4dead2/cfg");
    assert_eq!(
        std::fs::read_to_string(cfg.join("server.cfg")).unwrap(),
        "hostname \"from the spec\"\n"
    );
    let comp = std::fs::read_to_string(cfg.join("server_comp.cfg")).unwrap();
    assert!(comp.contains("left4me test server"), "{comp}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(cfg.join("server.cfg")).unwrap().uid(),
        980
    );
    // Bad overlay references are refused and nothing is written.
    for (i, bad) in ["../x", "/abs", "a//b", "missing"].iter().enumerate() {
        let name = format!("bad{i}");
        let out = init(
            &dir,
            &name,
            &format!("port: 27000\noverlays: [\"{bad}\"]\n"),
        );
        fails_with(&out, "lower[0]");
        assert!(!dir
            .join("instances")
            .join(&name)
            .join("config.json")
            .exists());
    }
    fails_with(&init(&dir, "noport", "overlays: []\n"), "port");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_instance_runs_answers_a2s_and_keeps_its_upper_layer_across_restarts() {
    if !can_run() {
        return;
    }
    let dir = scratch().join(format!("instance-run-{}", std::process::id()));
    let port = free_udp_port();
    let spec = format!("port: {port}\noverlays: [config, map]\nconfig:\n  - hostname \"instance {port}\"\n  - exec server_map.cfg\n");
    ok(&init(&dir, "beta", &spec));
    let inst = dir.join("instances/beta");
    let config = |args: &[&str]| {
        let mut cmd = Command::new(runtime_bin());
        cmd.arg("config").arg("--bundle").arg(&inst).args(args);
        ok(&run_captured(&mut cmd));
    };
    let controllers =
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    if !controllers.contains("memory") {
        for key in [
            "linux.resources.memory",
            "linux.resources.pids",
            "linux.resources.unified",
        ] {
            config(&["unset", key]);
        }
        config(&["annotation", "unset", "org.left4me.cpuset"]);
    }
    if std::fs::write("/proc/self/oom_score_adj", "-1").is_err() {
        config(&["unset", "process.oomScoreAdj"]); // no CAP_SYS_RESOURCE here
    } else {
        let _ = std::fs::write("/proc/self/oom_score_adj", "0");
    }
    let rt = Runtime::new();
    for round in 1..=2 {
        let mut run = rt.command();
        let out_file = dir.join(format!("run{round}.out"));
        run.args(["run", "--bundle", inst.to_str().unwrap(), "beta"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(std::fs::File::create(dir.join("run.err")).unwrap());
        let mut child = run.spawn().unwrap();
        let info = a2s_info(port, Duration::from_secs(60), &mut child).unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "no A2S answer: {}",
                std::fs::read_to_string(dir.join("run.err")).unwrap_or_default()
            )
        });
        assert_eq!(info["name"], format!("instance {port}"));
        assert_eq!(info["map"], "c2m1_highway");
        // SAFETY: kill(2) on our child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let stopped = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(stopped.elapsed() < Duration::from_secs(15));
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0));
        // ~/.steam/sdk32 is there: no LAN-only fallback.
        let out = std::fs::read_to_string(&out_file).unwrap();
        assert!(out.contains("steamclient.so found"), "{out}");
        // The log lives in the instance's upper layer and grows across restarts.
        let log = std::fs::read_to_string(inst.join("upper/left4dead2/logs/a2s.log")).unwrap();
        let answered = log.lines().filter(|l| l.contains("A2S_INFO from")).count();
        assert!(answered >= round, "round {round}: {log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The unit template passes systemd's own checker (systemd is not PID 1 on the test
/// machines, so the unit itself cannot be started here).
#[test]
fn the_unit_template_passes_systemd_analyze_verify() {
    if !can_run() {
        return;
    }
    let dir = scratch().join(format!("unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text =
        std::fs::read_to_string(workspace().join("bundles/l4d2-instance/left4me-server@.service"))
            .unwrap();
    for needle in [
        "Type=notify",
        "Delegate=yes",
        "KillSignal=SIGINT",
        "TimeoutStopSec=15s",
        "Restart=on-failure",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
    // The runtime path is checked to exist and be executable: point it at this build.
    let text = text.replace(
        "/usr/local/bin/left4me-runtime",
        runtime_bin().to_str().unwrap(),
    );
    let unit = dir.join("left4me-server@demo.service");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("left4me-server"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The game server's owner must see why it vanished: an instance whose process goes
/// past memory.max ends with 137 and one line naming the OOM killer and the limit.
/// Needs the memory controller (the VM).
#[test]
fn an_instance_killed_by_the_oom_killer_is_reported() {
    let controllers =
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    if !can_run() || !controllers.contains("memory") {
        return;
    }
    let dir = scratch().join(format!("instance-oom-{}", std::process::id()));
    let port = free_udp_port();
    ok(&init(
        &dir,
        "oom",
        &format!("port: {port}\noverlays: [map]\n"),
    ));
    let inst = dir.join("instances/oom");
    let config = |args: &[&str]| {
        let mut cmd = Command::new(runtime_bin());
        cmd.arg("config").arg("--bundle").arg(&inst).args(args);
        ok(&run_captured(&mut cmd));
    };
    config(&["set", "linux.resources.memory.limit", "67108864"]);
    config(&["set", "linux.resources.memory.swap", "67108864"]);
    config(&["unset", "linux.resources.unified"]);
    // What a leaking server does, in the instance's own root.
    config(&[
        "set",
        "process.args",
        r#"["/bin/sh","-c","x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo survived ${#x}"]"#,
    ]);
    let rt = Runtime::new();
    let out = rt.cmd(&["run", "--bundle", inst.to_str().unwrap(), "oom"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(!stdout(&out).contains("survived"));
    assert!(
        err.contains("killed by the OOM killer, memory.max=67108864"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
