//! The mmurr trace browser: a terminal UI over the replayer for the engineer who has a trace
//! and ten minutes. State ([`app`]) → update (key handling) → view ([`ui`]): drawing only
//! reads the state, so every screen renders on ratatui's test backend.
//!
//! Opening is fast whatever the trace's length: the header and index are read, the entry
//! state shown, and the event list and the MMU model load on a background thread
//! ([`load`]) while the UI already answers keys.

pub mod app;
pub mod events;
pub mod filter;
pub mod history;
pub mod keys;
pub mod load;
pub mod position;
pub mod terminal;
pub mod ui;

pub use app::App;
pub use terminal::run;
