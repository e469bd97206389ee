//! What a command-line tool is expected to carry: `--version` naming what
//! the build can open, shell completions, man pages, and `NO_COLOR`.

use std::process::Command;

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{stderr, unicache, unicache_bin};

fn stdout_of(args: &[&str]) -> String {
    let out = unicache().args(args).output().unwrap();
    common::assert_exit(&out, 0);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn version_names_the_backends_and_features() {
    let v = stdout_of(&["--version"]);
    assert!(
        v.starts_with(&format!(
            "unicache {} (backends: ",
            env!("CARGO_PKG_VERSION")
        )),
        "{v}"
    );
    for b in [
        "memory",
        "sqlite",
        "file",
        "redis",
        "memcached",
        "tls",
        "prometheus",
    ] {
        assert!(v.contains(b), "{b} missing from {v:?}");
    }
}

#[test]
fn completions_for_each_shell_name_the_commands() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef unicache"),
        ("fish", "complete -c unicache"),
    ] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: {script:.200}");
        for cmd in ["write", "export", "completions"] {
            assert!(script.contains(cmd), "{shell} script lacks {cmd}");
        }
    }
    let out = unicache().args(["completions", "tcsh"]).output().unwrap();
    common::assert_exit(&out, 2);
    assert!(
        stderr(&out).starts_with("unicache: error:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn man_pages_render_for_the_command_and_each_subcommand() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH unicache 1"), "{page:.300}");
    assert!(page.contains("write"), "{page:.300}");
    let dir = tempfile::tempdir().unwrap();
    let out = unicache()
        .args(["man", "--out-dir"])
        .arg(dir.path().join("man1"))
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("man1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for want in [
        "unicache.1",
        "unicache-write.1",
        "unicache-export.1",
        "unicache-man.1",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let write = std::fs::read_to_string(dir.path().join("man1/unicache-write.1")).unwrap();
    assert!(write.contains("\\-\\-batch\\-size"), "{write:.400}");
}

/// Help on a terminal is coloured; with `NO_COLOR` (any non-empty value) it
/// is not. `script` gives the binary a real pseudo-terminal.
#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "util-linux `script` is needed in CI"
        );
        eprintln!("skipped: no `script` here for a pseudo-terminal");
        return;
    }
    let on_tty = |no_color: Option<&str>| -> String {
        let mut cmd = Command::new("script");
        cmd.args(["-qec"])
            .arg(format!("{} --help", unicache_bin().display()))
            .arg("/dev/null")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .env("TERM", "xterm-256color");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_tty(None);
    assert!(coloured.contains("Usage"), "{coloured:.200}");
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal: {coloured:.200}"
    );
    let plain = on_tty(Some("1"));
    assert!(plain.contains("Usage"), "{plain:.200}");
    assert!(
        !plain.contains("\x1b["),
        "NO_COLOR=1 still coloured: {plain:.200}"
    );
    // An empty NO_COLOR does not count (no-color.org).
    assert!(on_tty(Some("")).contains("\x1b["));
}
