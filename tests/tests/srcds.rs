//! The stand-in game server (images/srcds-standin: a 32-bit static srcds_linux behind
//! Valve-style srcds_run) on a layered root of base + installation + map overlay +
//! config overlay, the way a left4me instance runs: uid 980, no capabilities,
//! no_new_privs, the `srcds` seccomp profile (x86_64 + i386), host network. A
//! third-party client (python-a2s from PyPI) queries it over loopback only.

use std::process::Stdio;
use std::time::{Duration, Instant};

use left4me_runtime_tests::*;
use serde_json::json;

fn instance_bundle(port: u16) -> Bundle {
    let store = l4d2_store();
    let mut b = Bundle::new(&[
        "/srcds_run",
        "-game",
        "left4dead2",
        "+ip",
        "127.0.0.1",
        "+hostport",
        &port.to_string(),
        "-nomaster",
    ]);
    std::fs::remove_dir_all(b.rootfs()).unwrap();
    std::fs::create_dir(b.rootfs()).unwrap();
    let profile: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("bundles/seccomp/srcds.json")).unwrap(),
    )
    .unwrap();
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        c["left4me"] = json!({"layers": {
            "store": store,
            "allowedRoots": ["base", "installation", "overlays"],
            // The script-built config overlay (uid 981) is idmapped to the service
            // user, as left4me's overlay helper does, so the game can write under it.
            "lower": [{"path": "overlays/config",
                       "uidMappings": [{"containerID": 981, "hostID": 980, "size": 1}],
                       "gidMappings": [{"containerID": 981, "hostID": 980, "size": 1}]},
                      {"path": "overlays/map"},
                      {"path": "installation"}, {"path": "base"}],
            "upper": "upper", "work": "work"
        }});
        c["process"]["user"] = json!({"uid": 980, "gid": 980});
        c["process"]["capabilities"] = json!({});
        c["process"]["noNewPrivileges"] = json!(true);
        c["process"]["cwd"] = json!("/left4dead2");
        c["linux"]["seccomp"] = profile;
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
    });
    b
}

#[test]
fn the_instance_answers_a2s_with_its_staged_config_and_stops_on_sigint() {
    if !can_run() {
        return;
    }
    let port = free_udp_port();
    let b = instance_bundle(port);
    let rt = Runtime::new();
    let log = b.dir.join("run.out");
    let mut run = rt.command();
    run.args(["run", "--bundle", b.dir.to_str().unwrap(), "srcds-a2s"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(b.dir.join("run.err")).unwrap());
    let mut child = run.spawn().unwrap();
    let info = a2s_info(port, Duration::from_secs(60), &mut child).unwrap_or_else(|| {
        let _ = child.kill();
        panic!(
            "no A2S answer; stdout: {}; stderr: {}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(b.dir.join("run.err")).unwrap_or_default()
        )
    });
    // hostname from the config overlay, map from the map overlay's cfg it execs.
    assert_eq!(info["name"], "left4me test server", "{info}");
    assert_eq!(info["map"], "c2m1_highway", "{info}");
    assert_eq!(info["folder"], "left4dead2");
    assert_eq!(info["app_id"], 550);
    assert_eq!(info["port"], port);
    assert_eq!(info["dedicated"], "d");
    // The game's own view: a 32-bit process under the filter, without privileges.
    let pid = rt.state("srcds-a2s").unwrap()["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for line in ["Seccomp:\t2", "NoNewPrivs:\t1", "CapEff:\t0000000000000000"] {
        assert!(
            status.lines().any(|l| l == line),
            "{line} missing:\n{status}"
        );
    }
    let exe = std::fs::read(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe[4], 1, "srcds_linux is not a 32-bit ELF");
    // Its log went to the upper layer only.
    let upper_log = b.dir.join("upper/left4dead2/logs/a2s.log");
    let text = std::fs::read_to_string(&upper_log).unwrap();
    assert!(text.contains("A2S_INFO from 127.0.0.1"), "{text}");
    assert!(!l4d2_store().join("installation/left4dead2/logs").exists());
    // SIGINT (the unit's KillSignal) stops it cleanly well within 15 s.
    let stopped = Instant::now();
    nix_kill(child.id(), libc::SIGINT);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("shutting down"));
    assert!(rt.state("srcds-a2s").is_none(), "run left its container");
}

fn nix_kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child we spawned.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}
