//! Prints the API reference, `docs/api-reference.md`, generated from the CRDs and the operator's
//! Event and condition reasons (`make generate` writes it).

fn main() {
    print!("{}", neurallog_tenant_operator::api_reference::api_markdown());
}
