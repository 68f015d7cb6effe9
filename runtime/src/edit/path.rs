//! Paths into a JSON document: `process.args`, `mounts[2].options`,
//! `annotations."org.left4me.cpuset"` (or `annotations["org.left4me.cpuset"]`) for keys
//! that contain dots.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

fn bad(path: &str, why: &str) -> Error {
    Error::Usage(format!("path {path:?}: {why}"))
}

/// Parses a path; the empty path is the whole document.
pub fn parse(path: &str) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    let quoted = |i: &mut usize, close: char| -> Result<String> {
        let mut s = String::new();
        while *i < chars.len() && chars[*i] != close {
            if chars[*i] == '\\' && *i + 1 < chars.len() {
                *i += 1;
            }
            s.push(chars[*i]);
            *i += 1;
        }
        if *i >= chars.len() {
            return Err(bad(path, "unterminated quote"));
        }
        *i += 1;
        Ok(s)
    };
    while i < chars.len() {
        match chars[i] {
            '.' if i > 0 => i += 1,
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'"') {
                    i += 1;
                    out.push(Segment::Key(quoted(&mut i, '"')?));
                    if chars.get(i) != Some(&']') {
                        return Err(bad(path, "expected ] after a quoted key"));
                    }
                    i += 1;
                } else {
                    let start = i;
                    while i < chars.len() && chars[i] != ']' {
                        i += 1;
                    }
                    let text: String = chars[start..i].iter().collect();
                    let n = text
                        .parse()
                        .map_err(|_| bad(path, &format!("{text:?} is not an index")))?;
                    out.push(Segment::Index(n));
                    if i >= chars.len() {
                        return Err(bad(path, "unterminated ["));
                    }
                    i += 1;
                }
            }
            '"' => {
                i += 1;
                out.push(Segment::Key(quoted(&mut i, '"')?));
            }
            _ => {
                let start = i;
                while i < chars.len() && !matches!(chars[i], '.' | '[') {
                    i += 1;
                }
                let key: String = chars[start..i].iter().collect();
                if key.is_empty() {
                    return Err(bad(path, "empty key"));
                }
                out.push(Segment::Key(key));
            }
        }
    }
    Ok(out)
}

/// The value at `path`, if present.
pub fn get<'a>(doc: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, seg| match seg {
        Segment::Key(k) => v.get(k),
        Segment::Index(n) => v.get(n),
    })
}

/// The value at `path`, creating missing objects on the way (an index must exist).
pub fn get_mut_or_create<'a>(
    doc: &'a mut Value,
    path: &[Segment],
    text: &str,
) -> Result<&'a mut Value> {
    let mut v = doc;
    for seg in path {
        v = match seg {
            Segment::Key(k) => {
                if v.is_null() {
                    *v = Value::Object(Map::new());
                }
                let obj = v.as_object_mut().ok_or_else(|| {
                    bad(
                        text,
                        &format!("{k:?} is inside something that is not an object"),
                    )
                })?;
                obj.entry(k.clone()).or_insert(Value::Null)
            }
            Segment::Index(n) => {
                let arr = v.as_array_mut().ok_or_else(|| {
                    bad(
                        text,
                        &format!("[{n}] is inside something that is not an array"),
                    )
                })?;
                let len = arr.len();
                arr.get_mut(*n).ok_or_else(|| {
                    bad(text, &format!("index {n} is out of range (length {len})"))
                })?
            }
        };
    }
    Ok(v)
}

/// Removes the value at `path`; false if it was not there.
pub fn remove(doc: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parent_path)) = path.split_last() else {
        return false;
    };
    let mut v = doc;
    for seg in parent_path {
        let next = match seg {
            Segment::Key(k) => v.get_mut(k),
            Segment::Index(n) => v.get_mut(n),
        };
        match next {
            Some(n) => v = n,
            None => return false,
        }
    }
    match (last, v) {
        (Segment::Key(k), Value::Object(o)) => o.shift_remove(k).is_some(),
        (Segment::Index(n), Value::Array(a)) if *n < a.len() => {
            a.remove(*n);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_parse_keys_indexes_and_quoted_keys() {
        assert_eq!(
            parse("mounts[2].options").unwrap(),
            vec![
                Segment::Key("mounts".into()),
                Segment::Index(2),
                Segment::Key("options".into())
            ]
        );
        let dotted = vec![
            Segment::Key("annotations".into()),
            Segment::Key("org.left4me.cpuset".into()),
        ];
        assert_eq!(parse("annotations.\"org.left4me.cpuset\"").unwrap(), dotted);
        assert_eq!(
            parse("annotations[\"org.left4me.cpuset\"]").unwrap(),
            dotted
        );
        assert!(parse("a[x]").is_err());
        assert!(parse("a[1").is_err());
        assert!(parse("a.\"b").is_err());
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn edits_create_objects_but_never_invent_array_slots() {
        let mut doc = json!({"process": {"args": ["sh"]}});
        *get_mut_or_create(
            &mut doc,
            &parse("linux.resources.memory.limit").unwrap(),
            "p",
        )
        .unwrap() = json!(5);
        assert_eq!(doc["linux"]["resources"]["memory"]["limit"], 5);
        assert!(get_mut_or_create(&mut doc, &parse("process.args[3]").unwrap(), "p").is_err());
        assert!(get_mut_or_create(&mut doc, &parse("process.args.x").unwrap(), "p").is_err());
        assert!(remove(&mut doc, &parse("process.args[0]").unwrap()));
        assert!(!remove(&mut doc, &parse("process.nope").unwrap()));
        assert_eq!(get(&doc, &parse("process.args").unwrap()), Some(&json!([])));
    }
}
