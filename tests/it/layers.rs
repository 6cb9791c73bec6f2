//! The layering of docs/architecture.md, checked against the code: every `crate::` import of a
//! file under src/ goes to a part listed below the file's own part, so imports point down and
//! no two parts import each other.

use std::{collections::BTreeSet, path::Path};

/// The parts from the top down, as docs/architecture.md's table lists them. Parts on one line
/// share a rank and must not import each other.
const LAYERS: &[&[&str]] = &[
    &["main", "cli", "bin"],
    &["app"],
    &["admin"],
    &["api"],
    &["state"],
    &["jobs"],
    &["conn"],
    &["policy"],
    &["jws"],
    &["config"],
    &["tls"],
    &["validation"],
    &["issuer"],
    &["store"],
    &["acme"],
    &["metrics", "clock", "secret", "telemetry"],
];

fn rank(part: &str) -> Option<usize> {
    LAYERS.iter().position(|parts| parts.contains(&part))
}

/// The part a file belongs to: its first path component under src/, without `.rs`.
fn part_of(rel: &Path) -> String {
    let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

/// The parts a source text names through `crate::`, in paths and in `use crate::{...}` groups.
fn imported_parts(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: depth 1 only.
            let (mut depth, mut name, mut at_start) = (1usize, String::new(), true);
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => at_start = true,
                    c if depth == 1 && at_start && (c.is_ascii_alphanumeric() || c == '_') => name.push(c),
                    _ if depth == 1 && !name.is_empty() => {
                        out.insert(std::mem::take(&mut name));
                        at_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            out.insert(name);
        }
    }
    // Capitalised names are items re-exported at the crate root (`crate::App`), not parts.
    out.retain(|n| n.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_point_down_the_layers_of_the_architecture_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let from = part_of(rel);
        if from == "lib" {
            continue;
        }
        let from_rank = rank(&from).unwrap_or_else(|| panic!("{} is in no layer of LAYERS", rel.display()));
        let text = std::fs::read_to_string(file).unwrap();
        for to in imported_parts(&text) {
            if to == from {
                continue;
            }
            let to_rank =
                rank(&to).unwrap_or_else(|| panic!("{} imports crate::{to}, which is in no layer", rel.display()));
            if to_rank <= from_rank {
                upward.push(format!("{} ({from}) imports crate::{to}", rel.display()));
            }
        }
    }
    assert!(files.len() > 50, "only {} source files found", files.len());
    assert!(upward.is_empty(), "imports that do not point down:\n{}", upward.join("\n"));
}

#[test]
fn the_import_reader_sees_groups_and_paths() {
    let text = "use crate::{\n    acme::{Problem, types::X},\n    jobs::Wake,\n    store,\n};\nlet x = crate::clock::from_unix(1); crate::App::new();";
    let parts: Vec<String> = imported_parts(text).into_iter().collect();
    assert_eq!(parts, ["acme", "clock", "jobs", "store"]);
}
