//! What a run found, as a table for people (stdout) and as JSON for tools
//! (`--out`). Nothing here measures anything: `model` holds the data,
//! `render` writes it out with `table`'s aligned columns.

mod model;
mod render;
mod table;

pub use model::{PeakMemory, Report, RunReport, Settings, compare};
pub use render::{format_errors, format_ms, format_rate, render};

#[cfg(test)]
mod tests;
