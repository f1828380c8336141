//! A child's command line from a parsed flag struct: the flag names come from the struct's clap
//! definition, the values from its serde form (the same field names), so a flag added to the
//! definition is passed on without anyone listing it.

use clap::{ArgAction, Args, Command};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ArgvError {
    #[error("flag values cannot be serialised: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error("the flag struct did not serialise to an object")]
    NotAnObject,
    #[error("argument {0} has no long name and no value to pass on")]
    NoLongName(String),
    #[error("argument --{flag}: value {value} cannot be passed on a command line")]
    Unrepresentable { flag: String, value: String },
}

/// `--flag value` pairs (and bare `--flag` for set switches) that make `T`'s parser produce
/// `value` again. Values equal to a flag's default are left out, so flags that `requires`
/// another (e.g. `--append` needs `--kernel`) are only passed when they were given.
pub fn to_argv<T: Args + Serialize>(value: &T) -> Result<Vec<String>, ArgvError> {
    let cmd = T::augment_args(Command::new("flags"));
    let json = serde_json::to_value(value)?;
    let fields = json.as_object().ok_or(ArgvError::NotAnObject)?;
    let mut argv = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(v) = fields.get(id) else { continue };
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let long = || {
            arg.get_long()
                .map(|l| format!("--{l}"))
                .ok_or_else(|| ArgvError::NoLongName(id.to_string()))
        };
        match (arg.get_action(), v) {
            (ArgAction::SetTrue, Value::Bool(true)) => argv.push(long()?),
            (ArgAction::SetTrue, _) => {}
            (_, Value::Null) => {}
            (_, Value::Array(items)) => {
                for item in items {
                    argv.push(long()?);
                    argv.push(scalar(id, item)?);
                }
            }
            (_, item) => {
                let s = scalar(id, item)?;
                if let [d] = defaults.as_slice() {
                    if *d == s || same_number(d, &s) {
                        continue;
                    }
                }
                argv.push(long()?);
                argv.push(s);
            }
        }
    }
    Ok(argv)
}

fn scalar(flag: &str, v: &Value) -> Result<String, ArgvError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(ArgvError::Unrepresentable {
            flag: flag.to_string(),
            value: other.to_string(),
        }),
    }
}

/// `"10000000"` and `10000000` (or `"60"` and `60.0`) are the same default.
fn same_number(a: &str, b: &str) -> bool {
    matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}
