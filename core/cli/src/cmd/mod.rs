//! One module per command.
pub mod batch;
pub mod bench;
pub mod data;
pub mod eval;
pub mod info;
pub mod sample;
pub mod train;

/// The options given on the command line (not defaulted), by field name.
pub fn given(m: &clap::ArgMatches) -> Vec<String> {
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}
