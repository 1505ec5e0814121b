use std::path::PathBuf;

use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize)]
struct Conf {
    port: u16,
    name: String,
    dir: PathBuf,
    log: Log,
}

#[derive(Debug, Deserialize)]
struct Log {
    level: String,
}

const DEFAULTS: &str = "port = 1\nname = \"d\"\ndir = \"./data\"\n[log]\nlevel = \"info\"\n";
const ENV: &[(&str, &str)] = &[("T_PORT", "port"), ("T_NAME", "name"), ("T_DIR", "dir")];

fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn flags_beat_the_file_which_beats_the_environment_which_beats_the_defaults() {
    let loaded = Layers::new(DEFAULTS)
        .env(ENV, env(&[("T_PORT", "2"), ("T_NAME", "env")]))
        .file_text("/etc/t.toml", "port = 3\n")
        .flag("--port", "port", None)
        .load::<Conf>()
        .unwrap();
    assert_eq!(loaded.value.port, 3, "the file beats the environment");
    assert_eq!(
        loaded.value.name, "env",
        "the environment beats the defaults"
    );
    assert_eq!(loaded.value.log.level, "info");
    assert_eq!(
        loaded.origins().of("port"),
        Origin::File("/etc/t.toml".into())
    );
    assert_eq!(loaded.origins().of("name"), Origin::Env("T_NAME".into()));
    assert_eq!(loaded.origins().of("log.level"), Origin::Default);
    let loaded = Layers::new(DEFAULTS)
        .env(ENV, env(&[("T_PORT", "2")]))
        .file_text("/etc/t.toml", "port = 3\n")
        .flag("--port", "port", Some("4".into()))
        .load::<Conf>()
        .unwrap();
    assert_eq!(loaded.value.port, 4, "a flag beats everything");
    assert_eq!(loaded.origins().of("port"), Origin::Flag("--port".into()));
    assert!(loaded.problems().is_empty());
}

#[test]
fn every_problem_is_reported_at_once_naming_its_key_and_source() {
    let loaded = Layers::new(DEFAULTS)
        .file_text(
            "/etc/t.toml",
            "prot = 3\n[log]\nlevel = \"loud\"\nformat = \"xml\"\n",
        )
        .load::<Conf>()
        .unwrap();
    let mut problems = loaded.problems();
    if loaded.value.log.level != "info" {
        problems.invalid(
            "log.level",
            format!("`{}` is not a level", loaded.value.log.level),
        );
    }
    problems.add(crate::Invalid::new("name", "checked too"));
    let err = problems.finish().unwrap_err();
    let file = Origin::File("/etc/t.toml".into());
    assert_eq!(
        err.problems,
        vec![
            Problem::Unknown {
                key: "log.format".into(),
                origin: file.clone()
            },
            Problem::Unknown {
                key: "prot".into(),
                origin: file.clone()
            },
            Problem::Invalid {
                key: "log.level".into(),
                origin: file,
                message: "`loud` is not a level".into()
            },
            Problem::Invalid {
                key: "name".into(),
                origin: Origin::Default,
                message: "checked too".into()
            },
        ]
    );
    assert_eq!(
        err.to_string(),
        "configuration: 4 problems: /etc/t.toml: log.format: unknown key; /etc/t.toml: prot: \
         unknown key; /etc/t.toml: log.level: `loud` is not a level; name: checked too"
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_key_and_where_it_was_set() {
    let err = Layers::new(DEFAULTS)
        .env(ENV, env(&[("T_PORT", "many")]))
        .load::<Conf>()
        .unwrap_err();
    let [Problem::Invalid { key, origin, .. }] = err.problems.as_slice() else {
        panic!("{err}");
    };
    assert_eq!(
        (key.as_str(), origin),
        ("port", &Origin::Env("T_PORT".into()))
    );
    assert!(
        err.to_string().starts_with("configuration: T_PORT: port: "),
        "{err}"
    );

    let err = Layers::new(DEFAULTS)
        .file_text("/etc/t.toml", "[log]\nlevel = [7]\n")
        .load::<Conf>()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "configuration: /etc/t.toml: log.level: invalid type: sequence, expected a string"
    );

    let err = Layers::new(DEFAULTS)
        .flag("--port", "port", Some("70000".into()))
        .load::<Conf>()
        .unwrap_err();
    assert!(
        err.to_string().starts_with("configuration: --port: port: "),
        "{err}"
    );
}

#[test]
fn a_file_that_cannot_be_read_or_parsed_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.toml");
    let err = Layers::new(DEFAULTS)
        .file(Some(missing.clone()), None)
        .load::<Conf>()
        .unwrap_err();
    assert!(matches!(&err.problems[..], [Problem::Unreadable { path, .. }] if *path == missing));
    // A home file is used only when it exists.
    let loaded = Layers::new(DEFAULTS)
        .file(None, Some(missing))
        .load::<Conf>()
        .unwrap();
    assert_eq!(loaded.file, None);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "port = \n").unwrap();
    let err = Layers::new(DEFAULTS)
        .file(None, Some(bad.clone()))
        .load::<Conf>()
        .unwrap_err();
    assert!(matches!(&err.problems[..], [Problem::Syntax { path, .. }] if *path == bad));
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn relative_paths_from_the_file_or_the_defaults_are_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    let load = |text: &str, vars: &'static [(&'static str, &'static str)], flag: Option<&str>| {
        std::fs::write(&file, text).unwrap();
        let loaded = Layers::new(DEFAULTS)
            .env(ENV, env(vars))
            .file(Some(file.clone()), None)
            .flag("--dir", "dir", flag.map(str::to_owned))
            .load::<Conf>()
            .unwrap();
        let mut dir = loaded.value.dir.clone();
        loaded.resolve_path("dir", &mut dir);
        dir
    };
    assert_eq!(
        load("dir = \"state\"\n", &[], None),
        dir.path().join("state")
    );
    assert_eq!(
        load("", &[], None),
        dir.path().join("./data"),
        "the default's"
    );
    assert_eq!(load("", &[("T_DIR", "env")], None), PathBuf::from("env"));
    assert_eq!(
        load("dir = \"x\"\n", &[], Some("flag")),
        PathBuf::from("flag")
    );
    assert_eq!(load("dir = \"/abs\"\n", &[], None), PathBuf::from("/abs"));
    // Without a file, nothing moves.
    let loaded = Layers::new(DEFAULTS).load::<Conf>().unwrap();
    let mut dir = loaded.value.dir.clone();
    loaded.resolve_path("dir", &mut dir);
    assert_eq!(dir, PathBuf::from("./data"));
}

#[test]
fn paths_into_options_and_lists_name_their_key_and_source() {
    #[derive(Debug, Deserialize)]
    struct Outer {
        inner: Option<Inner>,
        items: Vec<Inner>,
    }
    #[derive(Debug, Deserialize)]
    struct Inner {
        #[allow(dead_code)]
        a: u8,
    }
    let loaded = Layers::new("items = []\n")
        .file_text(
            "/etc/t.toml",
            "[inner]\na = 1\nextra = 2\n[[items]]\na = 1\nmore = 3\n",
        )
        .load::<Outer>()
        .unwrap();
    assert!(loaded.value.inner.is_some() && loaded.value.items.len() == 1);
    let err = loaded.problems().finish().unwrap_err();
    assert_eq!(
        err.messages(),
        [
            "/etc/t.toml: inner.extra: unknown key",
            "/etc/t.toml: items.0.more: unknown key"
        ]
    );
}
