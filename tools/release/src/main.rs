//! `release`: release tooling for the operator's OLM catalog.
//!
//! - `release channels --package <name> --releases <file>` prints the `olm.channel` blobs computed
//!   from the releases file (see the library documentation for the rules) to stdout.
//! - `release check-bundles --package <name> --releases <file> --bundles <dir>` fails, naming each
//!   file, unless the bundles directory holds exactly the released bundles, byte for byte.
//! - `release operatorhub --package <name> --releases <file> --bundles <dir> --out <dir>` writes
//!   the OperatorHub.io submission of every stable release below `<out>/operators/<name>/`.
//! - `release add --package <name> --releases <file> --version <v> --commit <id> --bundle <file>`
//!   appends a release, with the SHA-256 of its bundle file, to the releases file (`--check` only
//!   checks that the version can be released); `--image <name>=<reference by digest>`, repeated,
//!   records the release's images with it.
//! - `release image --releases <file> --version <v> --name <image>` prints the reference recorded
//!   for that image of that release, and fails when there is none.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use semver::Version;

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
        /// YAML list of releases: `- version: 0.1.0`, its `commit` and `sha256`, an optional `yanked: true`.
        #[arg(long)]
        releases: PathBuf,
    },
    /// Check that the bundles directory holds the bundle of every non-yanked release, byte for byte
    /// what the releases file's sha256 says, and no other file.
    CheckBundles {
        #[command(flatten)]
        catalog: Catalog,
    },
    /// Write the OperatorHub.io submission (community-operators layout) of every stable release,
    /// from the catalog's frozen bundles, below `<out>/operators/<package>/`.
    Operatorhub {
        #[command(flatten)]
        catalog: Catalog,
        /// Where `operators/` is written; what is there for the package is replaced.
        #[arg(long)]
        out: PathBuf,
    },
    /// Append a release to the releases file, with the commit it is built from and the sha256 of
    /// its bundle file in the catalog.
    Add {
        /// The OLM package name.
        #[arg(long)]
        package: String,
        /// The releases file.
        #[arg(long)]
        releases: PathBuf,
        /// The version being released.
        #[arg(long)]
        version: Version,
        /// The full id of the commit the release is built from.
        #[arg(long, required_unless_present = "check")]
        commit: Option<String>,
        /// The released bundle file (in the catalog's bundles directory).
        #[arg(long, required_unless_present = "check")]
        bundle: Option<PathBuf>,
        /// An image of the release, `<name>=<repository>@sha256:<hex>`; repeat for each.
        #[arg(long = "image", value_parser = parse_image, conflicts_with = "check")]
        images: Vec<(String, String)>,
        /// Only check that the version can be released; change nothing.
        #[arg(long, conflicts_with_all = ["commit", "bundle"])]
        check: bool,
    },
    /// Print the reference (by digest) recorded for one image of a release.
    Image {
        /// The releases file.
        #[arg(long)]
        releases: PathBuf,
        /// The released version.
        #[arg(long)]
        version: Version,
        /// The image: `operator`, `bundle` or `catalog`.
        #[arg(long)]
        name: String,
    },
}

/// The released bundles of a catalog and the list that records them.
#[derive(clap::Args)]
struct Catalog {
    /// The OLM package name; bundle files are named `<package>.v<version>.yaml`.
    #[arg(long)]
    package: String,
    /// The releases file.
    #[arg(long)]
    releases: PathBuf,
    /// The catalog's bundles directory.
    #[arg(long)]
    bundles: PathBuf,
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
        Command::CheckBundles { catalog: Catalog { package, releases, bundles } } => {
            let list = release::read_releases(&releases)?;
            let problems = release::check_bundles(&package, &list, &release::read_bundles(&bundles)?);
            if !problems.is_empty() {
                // One line per file, and no error chain (nor backtrace) after them.
                for problem in &problems {
                    eprintln!("{}: {problem}", bundles.join(problem.file()).display());
                }
                std::process::exit(1);
            }
        }
        Command::Operatorhub { catalog: Catalog { package, releases, bundles }, out } => {
            let list = release::read_releases(&releases)?;
            let files = release::operatorhub_submission(&package, &list, &release::read_bundles(&bundles)?)?;
            let dir = out.join("operators").join(&package);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", dir.display()));
                }
                _ => {}
            }
            for (path, text) in files {
                let path = dir.join(path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Image { releases, version, name } => {
            let list = release::read_releases(&releases)?;
            let release = list
                .iter()
                .find(|r| r.version == version)
                .with_context(|| format!("{version} is not in {}", releases.display()))?;
            let reference = release
                .images
                .get(&name)
                .with_context(|| format!("{} records no {name} image for {version}", releases.display()))?;
            println!("{reference}");
        }
        Command::Add { package, releases, version, commit, bundle, images, check } => {
            let yaml = std::fs::read_to_string(&releases).with_context(|| format!("reading {}", releases.display()))?;
            let context = || format!("releasing {version} in {}", releases.display());
            if check {
                let list = release::parse_releases(&yaml).with_context(context)?;
                release::check_new_release(&package, &list, &version).with_context(context)?;
            } else {
                // clap requires both without --check.
                let (Some(commit), Some(bundle)) = (commit, bundle) else {
                    anyhow::bail!("--commit and --bundle are required without --check");
                };
                let bytes = std::fs::read(&bundle).with_context(|| format!("reading {}", bundle.display()))?;
                let images = images.into_iter().collect();
                let text =
                    release::add_release(&package, &yaml, &version, &commit, &bytes, &images).with_context(context)?;
                std::fs::write(&releases, text).with_context(|| format!("writing {}", releases.display()))?;
            }
        }
    }
    Ok(())
}

/// `<name>=<reference>` of `--image`; the reference itself is checked with the release.
fn parse_image(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, reference)| (name.to_owned(), reference.to_owned()))
        .ok_or_else(|| format!("{text:?} is not <name>=<reference>"))
}
