//! `appschema-cli`: migrate every tenant schema, create and drop tenants.

use clap::Parser;

/// Schema-per-tenant multi-tenancy for Diesel on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "appschema-cli", version, about)]
struct Cli {}

fn main() {
    Cli::parse();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
