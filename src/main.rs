use clap::Parser;
use neurallog_tenant_operator::cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::main(cli::Cli::parse()).await
}
