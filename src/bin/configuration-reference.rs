//! Prints the configuration reference, `docs/configuration.md`, generated from the command line's
//! definition (`make generate` writes it).

fn main() {
    print!("{}", neurallog_tenant_operator::reference::configuration_markdown());
}
