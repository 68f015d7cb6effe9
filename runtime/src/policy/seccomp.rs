//! "At least as strict as profile P": everything the bundle's filter lets through, P
//! lets through too. Decided on the rules, conservatively: the bundle must deny by
//! default if P does; run only architectures P runs; and each syscall it allows must be
//! allowed by a rule of P whose conditions are a subset of the bundle rule's (more
//! conditions allow less). Where P restricts a syscall with a non-allowing rule beside
//! its allowing ones, the bundle must carry P's rules for it unchanged. Extra denials
//! are always fine.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Violation;

fn allows(action: &Value) -> bool {
    matches!(
        action.as_str().unwrap_or(""),
        "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG" | "SCMP_ACT_TRACE" | "SCMP_ACT_NOTIFY"
    )
}

/// The (action, errnoRet, conditions) rules a filter has for `name`.
fn rules_for(filter: &Value, name: &str) -> BTreeSet<String> {
    filter["syscalls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["names"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n == name))
        })
        .map(|r| {
            let mut args: Vec<String> = r["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::to_string)
                .collect();
            args.sort();
            format!("{} {} {}", r["action"], r["errnoRet"], args.join(" & "))
        })
        .collect()
}

fn conditions(rule: &Value) -> BTreeSet<String> {
    rule["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::to_string)
        .collect()
}

fn arches(filter: &Value) -> BTreeSet<String> {
    let listed: BTreeSet<String> = filter["architectures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    if listed.is_empty() {
        ["SCMP_ARCH_X86_64".to_string()].into()
    } else {
        listed
    }
}

/// Why `bundle` is less strict than `profile` (None: it is not).
pub fn weaker(bundle: &Value, profile: &Value) -> Option<String> {
    if bundle == profile {
        return None;
    }
    if allows(&profile["defaultAction"]) {
        return Some("a filter that differs from a profile that allows by default".into());
    }
    if allows(&bundle["defaultAction"]) {
        return Some(format!("defaultAction {}", bundle["defaultAction"]));
    }
    let extra: Vec<String> = arches(bundle)
        .difference(&arches(profile))
        .cloned()
        .collect();
    if !extra.is_empty() {
        return Some(format!("architectures {}", extra.join(", ")));
    }
    let flag = "SECCOMP_FILTER_FLAG_SPEC_ALLOW";
    let has_flag = |f: &Value| {
        f["flags"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == flag))
    };
    if has_flag(bundle) && !has_flag(profile) {
        return Some(flag.into());
    }
    for rule in bundle["syscalls"].as_array().into_iter().flatten() {
        if !allows(&rule["action"]) {
            continue;
        }
        let conds = conditions(rule);
        for name in rule["names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let p_rules: Vec<&Value> = profile["syscalls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| {
                    r["names"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|n| n == name))
                })
                .collect();
            let covered = p_rules
                .iter()
                .any(|r| allows(&r["action"]) && conditions(r).is_subset(&conds));
            if !covered {
                return Some(format!("{name} allowed (the profile does not allow it so)"));
            }
            let restricted = p_rules.iter().any(|r| !allows(&r["action"]));
            if restricted && rules_for(bundle, name) != rules_for(profile, name) {
                return Some(format!("{name} without the profile's restrictions"));
            }
        }
    }
    None
}

/// Appends a violation unless `filter` is at least as strict as one of `profiles`.
pub fn check(profiles: &[String], filter: &Value, out: &mut Vec<Violation>) {
    let allowed = profiles.join(", ");
    if filter.is_null() {
        out.push(Violation {
            field: "linux.seccomp".into(),
            asked: "no seccomp filter".into(),
            allowed: format!("a filter at least as strict as {allowed}"),
        });
        return;
    }
    let mut reasons = Vec::new();
    for name in profiles {
        let profile = match load(name) {
            Ok(p) => p,
            Err(e) => {
                reasons.push(format!("{name}: {e}"));
                continue;
            }
        };
        match weaker(filter, &profile) {
            None => return,
            Some(why) => reasons.push(format!("vs {name}: {why}")),
        }
    }
    out.push(Violation {
        field: "linux.seccomp".into(),
        asked: format!("a weaker filter ({})", reasons.join("; ")),
        allowed: format!("a filter at least as strict as {allowed}"),
    });
}

/// A shipped profile by name, or a profile file (absolute path, root's alone).
fn load(name: &str) -> Result<Value, String> {
    let text = match crate::seccomp::profiles::named(name) {
        Some(text) => text.to_string(),
        None if name.starts_with('/') => {
            // Root's alone, file and directories, and read without following a link.
            super::rules::root_owned_chain(std::path::Path::new(name))
                .map_err(|_| "not a root-owned regular file".to_string())?;
            use std::io::Read;
            use std::os::unix::fs::OpenOptionsExt;
            let mut text = String::new();
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(name)
                .and_then(|mut f| f.read_to_string(&mut text))
                .map_err(|e| e.to_string())?;
            text
        }
        None => return Err("no such shipped profile".into()),
    };
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn srcds() -> Value {
        serde_json::from_str(crate::seccomp::profiles::SRCDS).unwrap()
    }

    #[test]
    fn the_profile_itself_and_stricter_filters_pass() {
        assert_eq!(weaker(&srcds(), &srcds()), None);
        let mut fewer = srcds();
        let names = fewer["syscalls"][0]["names"].as_array_mut().unwrap();
        names.retain(|n| n != "read");
        assert_eq!(weaker(&fewer, &srcds()), None);
        let mut x64_only = srcds();
        x64_only["architectures"] = json!(["SCMP_ARCH_X86_64"]);
        assert_eq!(weaker(&x64_only, &srcds()), None);
        let mut more_conditions = srcds();
        more_conditions["syscalls"][1]["args"]
            .as_array_mut()
            .unwrap()
            .push(json!({"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}));
        assert_eq!(weaker(&more_conditions, &srcds()), None);
    }

    #[test]
    fn weaker_filters_say_why() {
        let mut open = srcds();
        open["defaultAction"] = json!("SCMP_ACT_ALLOW");
        assert!(weaker(&open, &srcds()).unwrap().contains("defaultAction"));
        let mut mount = srcds();
        mount["syscalls"][0]["names"]
            .as_array_mut()
            .unwrap()
            .push(json!("mount"));
        assert!(weaker(&mount, &srcds()).unwrap().contains("mount"));
        let mut x32 = srcds();
        x32["architectures"]
            .as_array_mut()
            .unwrap()
            .push(json!("SCMP_ARCH_X32"));
        assert!(weaker(&x32, &srcds()).unwrap().contains("X32"));
        // socket() of any family: the profile allows it only for three.
        let mut socket = srcds();
        socket["syscalls"][0]["names"]
            .as_array_mut()
            .unwrap()
            .push(json!("socket"));
        assert!(weaker(&socket, &srcds()).unwrap().contains("socket"));
        // clone3 allowed although the profile answers it ENOSYS.
        let mut clone3 = srcds();
        clone3["syscalls"][0]["names"]
            .as_array_mut()
            .unwrap()
            .push(json!("clone3"));
        assert!(weaker(&clone3, &srcds()).is_some());
    }
}
