//! The configuration reference, `docs/configuration.md`, generated from the command line's own
//! definition ([`crate::cli::Cli`]) so that it cannot say what the binary does not: every
//! subcommand, each with every flag, the environment variable that sets it, its default and its
//! help. `make generate` writes it; a test fails while the committed file is stale.

use clap::{Arg, ArgAction, Command, CommandFactory as _};

use crate::cli::Cli;

/// The committed file, relative to the repository's root.
pub const PATH: &str = "docs/configuration.md";

/// The reference as Markdown.
pub fn configuration_markdown() -> String {
    let mut cli = Cli::command();
    cli.build();
    let name = cli.get_name().to_owned();
    let mut out = String::new();
    out.push_str("# Configuration reference\n\n");
    out.push_str(&format!(
        "<!-- Generated from the command line's definition (src/cli.rs and the argument structs it \
         flattens) by `make generate`; do not edit. A unit test fails while this file is stale. -->\n\n\
         Every flag of `{name}`, by subcommand, with the environment variable that sets it, its \
         default and its help (`{name} <subcommand> --help` prints the same). A flag given on the \
         command line wins over its variable, and the variable over the default. A switch (default \
         `false`) set through its variable takes `true` or `false`. Every subcommand also takes \
         `--help`; `{name} --version` prints the version.\n"
    ));
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        subcommand(&mut out, &name, sub);
    }
    out
}

fn subcommand(out: &mut String, program: &str, sub: &Command) {
    out.push_str(&format!("\n## `{program} {}`\n\n", sub.get_name()));
    if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
        out.push_str(&format!("{}\n", one_line(&about.to_string())));
    }
    let args: Vec<&Arg> = sub
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
        .collect();
    if args.is_empty() {
        out.push_str("\nNo flags.\n");
    } else {
        out.push_str("\n| flag | environment variable | default | meaning |\n|---|---|---|---|\n");
        for arg in args {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                flag(arg),
                arg.get_env().map_or_else(String::new, |env| format!("`{}`", env.to_string_lossy())),
                default(arg),
                cell(&help(arg)),
            ));
        }
    }
    for nested in sub.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        subcommand(out, &format!("{program} {}", sub.get_name()), nested);
    }
}

/// `--name <VALUE>`, or `--name` for a switch, or `<NAME>` for a positional argument.
fn flag(arg: &Arg) -> String {
    let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
    let value = arg
        .get_value_names()
        .and_then(|names| names.first().map(ToString::to_string))
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    match arg.get_long() {
        Some(long) if takes_value => format!("`--{long} <{value}>`"),
        Some(long) => format!("`--{long}`"),
        None => format!("`<{value}>`"),
    }
}

fn default(arg: &Arg) -> String {
    let values: Vec<String> = arg.get_default_values().iter().map(|v| format!("`{}`", v.to_string_lossy())).collect();
    values.join(", ")
}

/// The help of an argument, with the values it accepts when they are a fixed set.
fn help(arg: &Arg) -> String {
    let mut text =
        one_line(&arg.get_long_help().or_else(|| arg.get_help()).map(ToString::to_string).unwrap_or_default());
    let possible: Vec<String> =
        arg.get_possible_values().iter().filter(|v| !v.is_hide_set()).map(|v| format!("`{}`", v.get_name())).collect();
    if !possible.is_empty() && arg.get_action().takes_values() {
        text.push_str(&format!(" One of: {}.", possible.join(", ")));
    }
    text
}

/// Paragraphs joined into one line, ending as a sentence (clap drops the first line's period).
fn one_line(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if !line.is_empty() && !line.ends_with(['.', '!', '?', ':']) {
        line.push('.');
    }
    line
}

/// One line, safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    table_cell(&one_line(text))
}

/// Text safe inside a Markdown table cell: its `|` escaped (docs/api-reference.md's cells too).
pub(crate) fn table_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    /// The committed reference is what the command line generates: regenerate it with
    /// `make generate`.
    #[test]
    fn committed_configuration_reference_is_up_to_date() {
        let committed = include_str!("../docs/configuration.md");
        assert!(
            committed == super::configuration_markdown(),
            "docs/configuration.md is stale: run `make generate` and commit the result"
        );
    }

    #[test]
    fn every_flag_of_run_is_in_the_reference() {
        use clap::CommandFactory as _;
        let reference = super::configuration_markdown();
        let cli = crate::cli::Cli::command();
        let run = cli.find_subcommand("run").expect("a run subcommand");
        for arg in run.get_arguments() {
            if let Some(long) = arg.get_long().filter(|l| *l != "help") {
                assert!(reference.contains(&format!("`--{long}")), "--{long} missing");
            }
        }
    }
}
