use clap::Parser;
use neurallog_tenant_operator::cli;

/// Stack of each runtime thread. Building a tenant's objects (the reconcile, and the judge of each
/// watched child) takes deep frames in an unoptimised build; the release build needs far less,
/// and only the pages touched count as memory.
const THREAD_STACK: usize = 8 << 20;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK)
        .build()?
        .block_on(cli::main(cli))
}
