//! `release`: release tooling for the operator's OLM catalog.
//!
//! `release channels --package <name> --releases <file>` prints the `olm.channel` blobs computed
//! from the releases file (see the library documentation for the rules) to stdout.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Release tooling for the operator's OLM file-based catalog.
#[derive(Parser)]
#[command(name = "release")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the olm.channel documents (candidate, stable) computed from the releases file.
    Channels {
        /// The OLM package name; bundles are named `<package>.v<version>`.
        #[arg(long)]
        package: String,
        /// YAML list of releases: `- version: 0.1.0` with an optional `yanked: true`.
        #[arg(long)]
        releases: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Channels { package, releases } => {
            let list = release::read_releases(&releases)?;
            let channels = release::channels(&package, &list)
                .with_context(|| format!("computing the channels from {}", releases.display()))?;
            std::io::stdout()
                .lock()
                .write_all(release::render_channels(&package, &channels).as_bytes())
                .context("writing to stdout")?;
        }
    }
    Ok(())
}
