//! `spear plugin keygen` and `spear plugin sign`: make a signing key, and sign plugin files with
//! it (`FILE.sig` beside each), in the runtime's format ([`spear_plugin_runtime::signing`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use spear_plugin_runtime::signing::{Key, sig_path};

use crate::Output;

/// Arguments of `spear plugin keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the new signing key (created with mode 0600; an existing file is kept).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `spear plugin sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The plugin files to sign.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The signing key (from `spear plugin keygen`).
    #[arg(long)]
    key: PathBuf,
}

/// Make a key; print its public half (what hosts put in `[plugins.trusted_keys]`).
pub fn keygen(args: KeygenArgs, output: Output) -> anyhow::Result<i32> {
    let key = Key::generate().map_err(anyhow::Error::msg)?;
    write_new_secret(&args.out, key.file_text().as_bytes())?;
    match output {
        Output::Json => println!(
            "{}",
            json!({"key_file": args.out, "public_key": key.public()})
        ),
        Output::Text => {
            println!("{}", key.public());
            eprintln!(
                "signing key written to {} (keep it secret); trust it on a host with\n  \
                 [plugins.trusted_keys]\n  NAME = \"{}\"",
                args.out.display(),
                key.public()
            );
        }
    }
    Ok(0)
}

/// Create `path` with `bytes`, readable by its owner only; never overwrite.
fn write_new_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Sign each file: write `FILE.sig` beside it.
pub fn sign(args: SignArgs, output: Output) -> anyhow::Result<i32> {
    let key = Key::read(&args.key).map_err(anyhow::Error::msg)?;
    for file in &args.files {
        let bytes = std::fs::read(file)
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", file.display()))?;
        let sig = sig_path(file);
        // Written whole, then renamed: a host never reads half a signature.
        let tmp = sig.with_extension("sig.tmp");
        std::fs::write(&tmp, key.sign(&bytes))
            .and_then(|()| std::fs::rename(&tmp, &sig))
            .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", sig.display()))?;
        match output {
            Output::Json => println!(
                "{}",
                json!({"file": file, "signature": sig, "public_key": key.public()})
            ),
            Output::Text => println!("signed {} → {}", file.display(), sig.display()),
        }
    }
    Ok(0)
}
