//! One module per command.
pub mod batch;
#[cfg(feature = "torch")]
pub mod bench;
pub mod data;
#[cfg(feature = "torch")]
pub mod eval;
pub mod info;
pub mod sample;
#[cfg(feature = "torch")]
pub mod train;

/// The options given on the command line (not defaulted), by field name.
pub fn given(m: &clap::ArgMatches) -> Vec<String> {
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}
