//! Encoding and decoding of a task call's parameters, byte-compatible with
//! django-background-tasks.
//!
//! # Storage format
//!
//! A call's parameters live in the `task_params` column as the two-element
//! JSON array `[args, kwargs]`, written exactly as Python's
//! `json.dumps([args, kwargs], sort_keys=True)` writes it:
//!
//! * separators `", "` and `": "`; `[]` and `{}` for empty containers;
//! * `ensure_ascii=True`: `\"`, `\\`, `\n`, `\r`, `\t`, `\b` and `\f` use short
//!   escapes, every other character outside `0x20..=0x7e` becomes a lowercase
//!   `\uXXXX` escape (characters beyond the BMP as a UTF-16 surrogate pair);
//! * dict keys sorted recursively, *before* they are turned into strings, so
//!   integer keys sort numerically (`{2: .., 10: ..}` → `{"2": .., "10": ..}`)
//!   and string keys by code point;
//! * `true`/`false`/`null`, integers in decimal, floats as Python's
//!   `repr(float)` (`1.0`, `1e-05`, `1e+16`, ...).
//!
//! `task_hash` is the lowercase hex SHA-1 of `task_name + task_params`; the
//! bytes must match Python's for the hash to match, which is why this module
//! writes the JSON itself instead of relying on `serde_json`'s formatter.
//!
//! # Layouts
//!
//! [`encode_call`] takes args and kwargs explicitly. [`encode_params`] maps
//! one typed value onto the pair automatically:
//!
//! | the value serializes to      | stored as                 |
//! |------------------------------|---------------------------|
//! | a map or struct              | kwargs, `[[], {...}]`     |
//! | a sequence or tuple          | args, `[[...], {}]`       |
//! | unit or `None`               | no arguments, `[[], {}]`  |
//! | a number, string or bool     | one argument, `[[x], {}]` |
//!
//! [`decode_params`] inverts that layout and [`decode_call`] returns the raw
//! pair.
//!
//! # Integers wider than 64 bits
//!
//! Python's ints are unbounded, so a row written by Django can hold `2**64`
//! or `10**30`. This module never changes such a number silently; it keeps
//! it exactly or refuses it with an error that names it:
//!
//! * **Encoding** writes every integer in full, as Python does: Rust's
//!   `i128`/`u128`, and integers of any width in JSON text (the CLI's
//!   `bgtasks enqueue --args/--kwargs`, or `serde_json`'s `RawValue` and
//!   `arbitrary_precision` numbers). A call holding one gets Python's text
//!   and hash. (Only a map *key* must fit in `i128`.)
//! * **Decoding** reads the stored text with this module's own parser, not
//!   `serde_json`'s (which turns such an integer into a float), and hands
//!   each integer to the params type exactly: as `u64`/`i64` when it fits,
//!   else as `u128`/`i128`. So an `i128` or `u128` field receives Python's
//!   `2**64` exactly. Where the type cannot take it (an `i64` or `f64`
//!   field, a `serde_json::Value`, or any integer wider than 128 bits), the
//!   decode fails with [`ParamsError::WideInteger`], naming the value, and
//!   the runner fails the task permanently with that message.
//!
//! Switching on `serde_json`'s `arbitrary_precision` feature for this crate
//! was the other way to keep such numbers; it was not taken because Cargo
//! unifies features: it would change `serde_json::Value` for every crate in
//! the build (a user's own code, sea-orm's JSON columns), and it breaks
//! numbers inside `#[serde(flatten)]` and untagged enums. If another crate
//! switches it on anyway, `serde_json::Value` targets receive the wide
//! integers exactly.
//!
//! # What Python writes and Rust cannot hold
//!
//! * A `str` with an unpaired UTF-16 surrogate (`"\ud800"` in the JSON) has
//!   no Rust `String` form: decoding fails with
//!   [`ParamsError::LoneSurrogate`], naming the escape and where it is.
//! * NaN and infinities: encoding refuses them with
//!   [`ParamsError::NonFiniteFloat`], and decoding Python's `NaN`/`Infinity`
//!   tokens fails with [`ParamsError::NonFiniteNumber`]; they are not JSON,
//!   and `serde_json::Value` would turn them into `null`.
//! * An integer of more than [`PYTHON_MAX_INT_DIGITS`] digits is refused
//!   ([`ParamsError::IntegerTooLong`]): no Python worker could read it.
//! * Lists and dicts nested deeper than [`MAX_DEPTH`] levels are refused
//!   ([`ParamsError::TooDeep`]), as `serde_json` refuses them.
//!
//! Each of these errors names the value and where it is. A value that a
//! later duplicate key replaces is no error, as Python keeps only the last.
//! Only text that Python's `json.dumps` cannot have written (not JSON, or
//! not the `[args, kwargs]` pair) gets [`ParamsError::Malformed`], whose
//! message says the row was written by someone else.

use std::cmp::Ordering;

use serde::de::{self, Deserialize, DeserializeOwned, DeserializeSeed, Visitor};
use serde::ser::{self, Impossible, Serialize};
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

/// Why params could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// A float was NaN or infinite; see the module docs for why this differs
    /// from Python.
    #[error(
        "cannot encode the float {value}: NaN and infinities have no JSON form; \
         pass a finite number or encode the value as a string"
    )]
    NonFiniteFloat {
        /// The offending value.
        value: f64,
    },

    /// A map key was an unsigned integer larger than `i128::MAX`. (Such
    /// integers are fine as values; only keys are limited to `i128`.)
    #[error(
        "cannot encode the map key {value}: integer keys must fit in i128; \
         use a string key instead"
    )]
    IntegerOutOfRange {
        /// The offending value.
        value: u128,
    },

    /// An integer in the JSON does not fit where it is going: into a
    /// `serde_json::Value` or an `i64`/`u64` field (wider than 64 bits), or
    /// into any Rust integer (wider than 128 bits). Python's ints are
    /// unbounded, so a row written by Python can hold one.
    #[error(
        "the integer {value} cannot be decoded exactly ({reason}); Python's ints are \
         unbounded but Rust's are not: give the params field that receives it the type \
         i128 or u128 (up to 128 bits), or have the caller pass a wider one as a string"
    )]
    WideInteger {
        /// The integer as stored (shortened in the middle when very long).
        value: String,
        /// Why it did not fit.
        reason: String,
    },

    /// An integer has more decimal digits than Python reads or writes.
    #[error(
        "the integer at character {position} has {digits} digits; Python refuses to \
         convert integers of more than {PYTHON_MAX_INT_DIGITS} digits (its \
         sys.get_int_max_str_digits()), so no Python worker could read it back"
    )]
    IntegerTooLong {
        /// Its number of decimal digits.
        digits: usize,
        /// Where it starts in the text (1-based, in characters).
        position: usize,
    },

    /// The JSON holds a `\uXXXX` escape of a UTF-16 surrogate that is not
    /// part of a pair. Python's `json.dumps` writes one for a `str` holding
    /// an unpaired surrogate (e.g. from `errors="surrogateescape"`).
    #[error(
        "the JSON holds the lone UTF-16 surrogate {escape} at character {position}: \
         Python's json writes this escape for a str that is not valid Unicode, and a \
         Rust string cannot hold it, so this library can neither decode nor store the \
         value without changing it; use valid Unicode text (or send bytes as a list \
         of ints)"
    )]
    LoneSurrogate {
        /// The escape as written, e.g. `\ud800`.
        escape: String,
        /// Where it starts in the text (1-based, in characters).
        position: usize,
    },

    /// The JSON holds `NaN`, `Infinity` or `-Infinity` (which Python's
    /// `json.dumps` writes for non-finite floats), or a number literal too
    /// large for a float.
    #[error(
        "the JSON holds the number {token} at character {position}, which is not a \
         finite float: Python writes NaN and Infinity for non-finite floats, but they \
         are not JSON, so this library neither decodes nor stores them; use a finite \
         number or a string"
    )]
    NonFiniteNumber {
        /// The token as written.
        token: String,
        /// Where it starts in the text (1-based, in characters).
        position: usize,
    },

    /// One map mixed keys that Python cannot order against each other.
    #[error(
        "map keys of type {first} and {second} cannot be sorted together \
         (Python's json.dumps(sort_keys=True) raises TypeError); use keys of one type"
    )]
    MixedKeyTypes {
        /// Python type name of one key (`str`, `int`, `float`, `bool`, `None`).
        first: &'static str,
        /// Python type name of a key that cannot be compared with `first`.
        second: &'static str,
    },

    /// A map key serialized to something JSON cannot use as a key.
    #[error(
        "a map key of type {kind} is not supported; keys must be strings, integers, \
         floats, bools, unit/None or unit enum variants"
    )]
    UnsupportedKey {
        /// What the key serialized to.
        kind: &'static str,
    },

    /// The `args` given to [`encode_call`] did not serialize to a sequence.
    #[error(
        "args must serialize to a sequence or tuple (or `()` for none), but they \
         serialized to {found}; wrap a single argument in a 1-tuple like `(value,)`"
    )]
    NotAnArgsList {
        /// What the args serialized to.
        found: &'static str,
    },

    /// The `kwargs` given to [`encode_call`] did not serialize to a map.
    #[error(
        "kwargs must serialize to a map or struct (or `()` for none), but they \
         serialized to {found}"
    )]
    NotAKwargsMap {
        /// What the kwargs serialized to.
        found: &'static str,
    },

    /// The JSON nests lists and dicts deeper than [`MAX_DEPTH`] levels.
    #[error(
        "the JSON nests lists and dicts deeper than {MAX_DEPTH} levels, more than this \
         library decodes; flatten the value"
    )]
    TooDeep,

    /// The stored text is not the JSON array `[list, object]`. Python's
    /// `json.dumps` never writes such text, so the row was not written by
    /// this library or by django-background-tasks.
    #[error(
        "stored task_params is not a JSON array [args, kwargs]: {reason}; \
         it was not written by this library or by django-background-tasks"
    )]
    Malformed {
        /// What is wrong with the text.
        reason: String,
    },

    /// [`decode_params`] met a call with both positional and keyword arguments.
    #[error(
        "the call has {args} positional argument(s) and {kwargs} keyword argument(s), \
         but the task's params type uses the automatic layout, which maps a call to \
         only one of them; override the task's decode and use decode_call to read both"
    )]
    BothArgsAndKwargs {
        /// Number of positional arguments.
        args: usize,
        /// Number of keyword arguments.
        kwargs: usize,
    },

    /// The stored arguments did not fit the requested type.
    #[error(
        "the stored params do not fit the task's params type ({context}): {source}; \
         check that the task was queued with the same params type"
    )]
    Decode {
        /// Which part of the call was being decoded.
        context: &'static str,
        /// The error reported by `serde_json`.
        source: serde_json::Error,
    },

    /// A `Serialize` implementation reported its own error.
    #[error("could not serialize the params: {0}")]
    Custom(String),
}

impl ser::Error for ParamsError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self::Custom(msg.to_string())
    }
}

/// Encodes typed params with the automatic layout and returns the
/// `task_params` text.
///
/// Layout: a value that serializes to a map/struct → kwargs (args = `[]`); to
/// a sequence/tuple → positional args (kwargs = `{}`); to unit/`None` → no
/// arguments (`[[], {}]`); any other scalar (number, string, bool) → one
/// positional argument.
pub fn encode_params<T: Serialize + ?Sized>(params: &T) -> Result<String, ParamsError> {
    let (args, kwargs) = match params.serialize(ValueSerializer)? {
        PyValue::Null => (Vec::new(), Vec::new()),
        PyValue::List(items) => (items, Vec::new()),
        PyValue::Dict(entries) => (Vec::new(), entries),
        scalar => (vec![scalar], Vec::new()),
    };
    Ok(render_call(args, kwargs))
}

/// Encodes a call with an explicit layout and returns the `task_params` text.
///
/// `args` must serialize to a sequence or tuple, `kwargs` to a map or struct;
/// either may serialize to unit (`()`, `None`) to mean "none".
pub fn encode_call<A: Serialize + ?Sized, K: Serialize + ?Sized>(
    args: &A,
    kwargs: &K,
) -> Result<String, ParamsError> {
    let args = match args.serialize(ValueSerializer)? {
        PyValue::Null => Vec::new(),
        PyValue::List(items) => items,
        other => {
            return Err(ParamsError::NotAnArgsList {
                found: other.kind(),
            });
        }
    };
    let kwargs = match kwargs.serialize(ValueSerializer)? {
        PyValue::Null => Vec::new(),
        PyValue::Dict(entries) => entries,
        other => {
            return Err(ParamsError::NotAKwargsMap {
                found: other.kind(),
            });
        }
    };
    Ok(render_call(args, kwargs))
}

/// Returns Python's `json.dumps(value, sort_keys=True)` of any serializable
/// value.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Result<String, ParamsError> {
    let value = value.serialize(ValueSerializer)?;
    let mut out = String::new();
    write_value(&mut out, &value);
    Ok(out)
}

/// Returns the lowercase hex SHA-1 of `task_name + task_params`, the value of
/// the `task_hash` column.
pub fn task_hash(task_name: &str, task_params: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(task_name.as_bytes());
    hasher.update(task_params.as_bytes());
    let mut out = String::with_capacity(40);
    for byte in hasher.finalize() {
        push_hex_digit(&mut out, byte >> 4);
        push_hex_digit(&mut out, byte & 0xf);
    }
    out
}

/// Parses stored `task_params` into `(args, kwargs)`.
///
/// Fails with [`ParamsError::Malformed`] unless the text is a two-element JSON
/// array whose first element is an array and whose second is an object, and
/// with [`ParamsError::WideInteger`] when an integer does not fit a
/// `serde_json::Value` (wider than 64 bits; see the module docs).
pub fn decode_call(task_params: &str) -> Result<(Vec<Value>, Map<String, Value>), ParamsError> {
    let (args, kwargs) = parse_call(task_params)?;
    let args =
        deserialize_node(&Json::List(args)).map_err(|e| e.into_params("positional arguments"))?;
    let kwargs =
        deserialize_node(&Json::Dict(kwargs)).map_err(|e| e.into_params("keyword arguments"))?;
    Ok((args, kwargs))
}

/// Decodes stored `task_params` into `T`, inverting [`encode_params`]'
/// automatic layout:
///
/// * no args and no kwargs: `T` from `null`, then from `{}`, then from `[]`
///   (the first that succeeds);
/// * only kwargs: `T` from the kwargs object;
/// * only args: `T` from the args array; if that fails and there is exactly
///   one arg, `T` from that single arg;
/// * both: [`ParamsError::BothArgsAndKwargs`]; such calls need
///   [`decode_call`].
///
/// Integers reach `T` exactly: up to 64 bits as `u64`/`i64`, up to 128 bits
/// as `u128`/`i128` (so an `i128` field gets Python's `2**64` or `10**30`);
/// one that `T` cannot hold fails with [`ParamsError::WideInteger`].
pub fn decode_params<T: DeserializeOwned>(task_params: &str) -> Result<T, ParamsError> {
    let (args, kwargs) = parse_call(task_params)?;
    match (args.is_empty(), kwargs.is_empty()) {
        (true, true) => {
            if let Ok(value) = deserialize_node(&Json::Null) {
                return Ok(value);
            }
            // Params types are usually structs, for which the `{}` attempt's
            // error ("missing field ...") is the most telling, so that is the
            // one reported when every attempt fails.
            let object_error = match deserialize_node(&Json::Dict(Vec::new())) {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            deserialize_node(&Json::List(Vec::new()))
                .map_err(|_| object_error.into_params("the call has no arguments"))
        }
        (true, false) => {
            deserialize_node(&Json::Dict(kwargs)).map_err(|e| e.into_params("keyword arguments"))
        }
        (false, true) => {
            let args = Json::List(args);
            let array_error = match deserialize_node(&args) {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            match &args {
                Json::List(items) if items.len() == 1 => deserialize_node(&items[0])
                    .map_err(|e| e.into_params("the single positional argument")),
                _ => Err(array_error.into_params("positional arguments")),
            }
        }
        (false, false) => Err(ParamsError::BothArgsAndKwargs {
            args: args.len(),
            kwargs: kwargs.len(),
        }),
    }
}

/// Indents stored JSON (`task_params`, or a history row's `result`) for
/// people to read, keeping every number as stored: unlike a round trip
/// through `serde_json::Value`, Python's `2**64` stays `18446744073709551616`
/// rather than becoming `1.8446744073709552e+19`. Strings are shown as
/// text, not as `\uXXXX` escapes.
///
/// Fails on text that cannot be decoded (not JSON, a lone surrogate,
/// `NaN`, ...); callers show the raw text and the error then.
pub fn pretty(text: &str) -> Result<String, ParamsError> {
    let value = parse_json(text)?;
    let mut out = String::new();
    write_pretty(&mut out, &value, 0);
    Ok(out)
}

/// Dict entries as parsed.
type Entries = Vec<(String, Json)>;

/// Parses stored `task_params` into its args list and kwargs dict.
fn parse_call(task_params: &str) -> Result<(Vec<Json>, Entries), ParamsError> {
    let parsed = parse_json(task_params).map_err(|error| match error {
        ParamsError::Malformed { reason } => ParamsError::Malformed {
            reason: format!("invalid JSON ({reason})"),
        },
        other => other,
    })?;
    let Json::List(pair) = parsed else {
        return Err(ParamsError::Malformed {
            reason: format!("the top level is {}", parsed.kind()),
        });
    };
    let [args, kwargs]: [Json; 2] =
        pair.try_into()
            .map_err(|pair: Vec<Json>| ParamsError::Malformed {
                reason: format!("the top-level array has {} elements, not 2", pair.len()),
            })?;
    match (args, kwargs) {
        (Json::List(args), Json::Dict(kwargs)) => Ok((args, kwargs)),
        (Json::List(_), other) => Err(ParamsError::Malformed {
            reason: format!("kwargs is {}, not an object", other.kind()),
        }),
        (other, _) => Err(ParamsError::Malformed {
            reason: format!("args is {}, not an array", other.kind()),
        }),
    }
}

// ---------------------------------------------------------------------------
// Parsed JSON, exact
// ---------------------------------------------------------------------------

/// Deepest nesting of lists and dicts that decoding accepts, the same
/// limit `serde_json` applies.
pub const MAX_DEPTH: usize = 128;

/// The most decimal digits Python converts between an int and its text
/// (`sys.get_int_max_str_digits()`, since Python 3.11 and the 3.8–3.10
/// security releases): `json.dumps` cannot write a longer integer and
/// `json.loads` refuses one.
pub const PYTHON_MAX_INT_DIGITS: usize = 4300;

/// A JSON value as Python's `json.loads` reads it, without the losses of
/// `serde_json::Value`: integers of any size keep their digits, and text
/// that Python could write but Rust cannot hold exactly (lone surrogates,
/// `NaN`) is refused with an error that names it instead of a generic
/// syntax error.
///
/// It serializes through [`to_python_json`] and friends to exactly what
/// Python's `json.dumps(json.loads(text), sort_keys=True)` writes, which is
/// what `bgtasks enqueue --args/--kwargs` stores.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    /// Decimal digits with an optional `-`, as Python writes the int: no
    /// leading zeros, and never `-0`.
    Int(String),
    /// Always finite.
    Float(f64),
    Str(String),
    List(Vec<Json>),
    /// In first-seen key order; a repeated key keeps its last value, as a
    /// Python dict built by `json.loads` does.
    Dict(Vec<(String, Json)>),
    /// A value Python reads but Rust cannot hold (a lone surrogate, NaN,
    /// an over-long integer). Only while parsing: it is an error unless a
    /// later duplicate key replaces it, as it would in Python, so
    /// [`parse_json`] never returns a tree holding one.
    Unrepresentable(Problem),
}

/// What a [`Json::Unrepresentable`] stands for; [`Problem::into_error`]
/// gives the error it becomes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Problem {
    LoneSurrogate { escape: String, position: usize },
    NonFinite { token: String, position: usize },
    TooLong { digits: usize, position: usize },
}

impl Problem {
    /// The problem an error names, or the error itself when it is another.
    fn from_error(error: ParamsError) -> Result<Self, ParamsError> {
        match error {
            ParamsError::LoneSurrogate { escape, position } => {
                Ok(Self::LoneSurrogate { escape, position })
            }
            ParamsError::NonFiniteNumber { token, position } => {
                Ok(Self::NonFinite { token, position })
            }
            ParamsError::IntegerTooLong { digits, position } => {
                Ok(Self::TooLong { digits, position })
            }
            other => Err(other),
        }
    }

    fn position(&self) -> usize {
        match self {
            Self::LoneSurrogate { position, .. }
            | Self::NonFinite { position, .. }
            | Self::TooLong { position, .. } => *position,
        }
    }

    fn into_error(self) -> ParamsError {
        match self {
            Self::LoneSurrogate { escape, position } => {
                ParamsError::LoneSurrogate { escape, position }
            }
            Self::NonFinite { token, position } => ParamsError::NonFiniteNumber { token, position },
            Self::TooLong { digits, position } => ParamsError::IntegerTooLong { digits, position },
        }
    }

    /// The earliest problem left in `value`.
    fn first_in(value: &Json) -> Option<&Problem> {
        match value {
            Json::Unrepresentable(problem) => Some(problem),
            Json::List(items) => items
                .iter()
                .filter_map(Self::first_in)
                .min_by_key(|p| p.position()),
            Json::Dict(entries) => entries
                .iter()
                .filter_map(|(_, v)| Self::first_in(v))
                .min_by_key(|p| p.position()),
            _ => None,
        }
    }
}

impl Json {
    /// Describes the value for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a bool",
            Self::Int(_) | Self::Float(_) => "a number",
            Self::Str(_) => "a string",
            Self::List(_) => "an array",
            Self::Dict(_) => "an object",
            Self::Unrepresentable(_) => "a value Rust cannot hold",
        }
    }

    fn unexpected(&self) -> de::Unexpected<'_> {
        match self {
            Self::Null => de::Unexpected::Unit,
            Self::Bool(b) => de::Unexpected::Bool(*b),
            Self::Int(text) => match (text.parse::<u64>(), text.parse::<i64>()) {
                (Ok(u), _) => de::Unexpected::Unsigned(u),
                (_, Ok(i)) => de::Unexpected::Signed(i),
                _ => de::Unexpected::Other("an integer wider than 64 bits"),
            },
            Self::Float(f) => de::Unexpected::Float(*f),
            Self::Str(s) => de::Unexpected::Str(s),
            Self::List(_) => de::Unexpected::Seq,
            Self::Dict(_) => de::Unexpected::Map,
            Self::Unrepresentable(_) => de::Unexpected::Other("a value Rust cannot hold"),
        }
    }
}

/// Parses one JSON document (RFC 8259, as strict as `serde_json`) the way
/// Python's `json.loads` reads it: numbers with a fraction or exponent are
/// floats, all others ints of any size; a repeated key keeps its last value.
///
/// Errors: [`ParamsError::Malformed`] (with just the syntax problem as its
/// reason) for text that is not JSON, and the specific variants for what
/// Python writes but Rust cannot hold: [`ParamsError::LoneSurrogate`],
/// [`ParamsError::NonFiniteNumber`], [`ParamsError::IntegerTooLong`];
/// [`ParamsError::TooDeep`] beyond [`MAX_DEPTH`].
pub(crate) fn parse_json(text: &str) -> Result<Json, ParamsError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
        deferred: 0,
    };
    let value = parser.value()?;
    parser.skip_whitespace();
    if parser.pos < parser.bytes.len() {
        return Err(parser.syntax("trailing characters after the JSON value"));
    }
    if parser.deferred > 0
        && let Some(problem) = Problem::first_in(&value)
    {
        return Err(problem.clone().into_error());
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// Byte offset of the next unread byte.
    pos: usize,
    depth: usize,
    /// How many values became [`Json::Unrepresentable`].
    deferred: usize,
}

impl Parser<'_> {
    /// 1-based character position of a byte offset, for messages.
    fn position(&self, at: usize) -> usize {
        self.text
            .get(..at)
            .map_or(at, |before| before.chars().count())
            + 1
    }

    fn syntax(&self, what: &str) -> ParamsError {
        ParamsError::Malformed {
            reason: format!("{what} at character {}", self.position(self.pos)),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `literal` if the text continues with it.
    fn eat(&mut self, literal: &str) -> bool {
        let found = self.bytes[self.pos..].starts_with(literal.as_bytes());
        if found {
            self.pos += literal.len();
        }
        found
    }

    /// A value; what Rust cannot hold becomes [`Json::Unrepresentable`],
    /// the text after it read, so that a later duplicate key can replace it.
    fn value(&mut self) -> Result<Json, ParamsError> {
        match self.value_or_problem() {
            Err(error) => Problem::from_error(error).map(|problem| {
                self.deferred += 1;
                Json::Unrepresentable(problem)
            }),
            ok => ok,
        }
    }

    fn value_or_problem(&mut self) -> Result<Json, ParamsError> {
        self.skip_whitespace();
        let start = self.pos;
        match self.peek() {
            Some(b'n') if self.eat("null") => Ok(Json::Null),
            Some(b't') if self.eat("true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => self.nested(Self::list),
            Some(b'{') => self.nested(Self::dict),
            Some(b'-' | b'0'..=b'9') => self.number(),
            // What Python's json.dumps writes for non-finite floats.
            Some(b'N' | b'I') if self.eat("NaN") || self.eat("Infinity") => {
                Err(self.non_finite(start))
            }
            None => Err(self.syntax("expected a value, found the end of the text")),
            Some(_) => Err(self.syntax("expected a value")),
        }
    }

    fn non_finite(&self, start: usize) -> ParamsError {
        ParamsError::NonFiniteNumber {
            token: self.text[start..self.pos].to_owned(),
            position: self.position(start),
        }
    }

    fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<Json, ParamsError>,
    ) -> Result<Json, ParamsError> {
        if self.depth == MAX_DEPTH {
            return Err(ParamsError::TooDeep);
        }
        self.depth += 1;
        self.pos += 1;
        let value = parse(self);
        self.depth -= 1;
        value
    }

    /// After `[`.
    fn list(&mut self) -> Result<Json, ParamsError> {
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.eat("]") {
            return Ok(Json::List(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_whitespace();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                return Ok(Json::List(items));
            }
            return Err(self.syntax("expected ',' or ']'"));
        }
    }

    /// After `{`. A key with a lone surrogate makes the whole dict
    /// unrepresentable, reported once the dict is read.
    fn dict(&mut self) -> Result<Json, ParamsError> {
        let mut entries: Vec<(String, Json)> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = Default::default();
        let mut bad_key = None;
        self.skip_whitespace();
        if self.eat("}") {
            return Ok(Json::Dict(entries));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a string key"));
            }
            let key = match self.string() {
                Ok(key) => key,
                Err(error @ ParamsError::LoneSurrogate { .. }) => {
                    bad_key.get_or_insert(error);
                    String::new()
                }
                Err(error) => return Err(error),
            };
            self.skip_whitespace();
            if !self.eat(":") {
                return Err(self.syntax("expected ':'"));
            }
            let value = self.value()?;
            match index.get(&key) {
                // Python's dict keeps the first position and the last value.
                Some(&at) => entries[at].1 = value,
                None => {
                    index.insert(key.clone(), entries.len());
                    entries.push((key, value));
                }
            }
            self.skip_whitespace();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                return bad_key.map_or(Ok(Json::Dict(entries)), Err);
            }
            return Err(self.syntax("expected ',' or '}'"));
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Json, ParamsError> {
        let start = self.pos;
        let negative = self.eat("-");
        if negative && self.eat("Infinity") {
            return Err(self.non_finite(start));
        }
        let int_start = self.pos;
        let int_digits = self.digits();
        if int_digits == 0 {
            return Err(self.syntax("expected a digit"));
        }
        if int_digits > 1 && self.bytes[int_start] == b'0' {
            return Err(ParamsError::Malformed {
                reason: format!(
                    "a number has a leading zero at character {}",
                    self.position(int_start)
                ),
            });
        }
        let mut float = false;
        if self.eat(".") {
            float = true;
            if self.digits() == 0 {
                return Err(self.syntax("expected a digit after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            float = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.syntax("expected a digit in the exponent"));
            }
        }
        let literal = &self.text[start..self.pos];
        if float {
            // Rust's parse rounds correctly, as Python's float() does.
            return match literal.parse::<f64>() {
                Ok(value) if value.is_finite() => Ok(Json::Float(value)),
                _ => Err(self.non_finite(start)),
            };
        }
        if int_digits > PYTHON_MAX_INT_DIGITS {
            return Err(ParamsError::IntegerTooLong {
                digits: int_digits,
                position: self.position(start),
            });
        }
        Ok(Json::Int(if literal == "-0" {
            "0".to_owned()
        } else {
            literal.to_owned()
        }))
    }

    /// A string literal, at its opening quote. A lone surrogate is reported
    /// after the whole literal is read.
    fn string(&mut self) -> Result<String, ParamsError> {
        self.pos += 1;
        let mut out = String::new();
        let mut lone = None;
        loop {
            let run_start = self.pos;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Only ASCII bytes stop the run, so both ends are char boundaries.
            out.push_str(&self.text[run_start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return lone.map_or(Ok(out), Err);
                }
                Some(b'\\') => {
                    let escape_start = self.pos;
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            match self.unicode_escape(escape_start) {
                                Ok(c) => out.push(c),
                                Err(error @ ParamsError::LoneSurrogate { .. }) => {
                                    lone.get_or_insert(error);
                                }
                                Err(error) => return Err(error),
                            }
                            continue;
                        }
                        _ => return Err(self.syntax("invalid escape")),
                    };
                    self.pos += 1;
                    out.push(c);
                }
                None => return Err(self.syntax("unterminated string")),
                Some(_) => return Err(self.syntax("control character in a string")),
            }
        }
    }

    /// Four hex digits after `\u`.
    fn hex4(&mut self) -> Result<u16, ParamsError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.syntax("expected four hex digits after \\u"))?;
        self.pos += 4;
        u16::from_str_radix(digits, 16).map_err(|_| self.syntax("invalid \\u escape"))
    }

    /// The character of a `\uXXXX` escape (two, for a surrogate pair), the
    /// `\u` already read.
    fn unicode_escape(&mut self, escape_start: usize) -> Result<char, ParamsError> {
        let unit = self.hex4()?;
        let lone = |parser: &Self| ParamsError::LoneSurrogate {
            escape: parser.text[escape_start..escape_start + 6].to_owned(),
            position: parser.position(escape_start),
        };
        match unit {
            0xd800..=0xdbff => {
                let after_high = self.pos;
                if self.eat("\\u")
                    && let Ok(low @ 0xdc00..=0xdfff) = self.hex4()
                {
                    let code =
                        0x10000 + ((u32::from(unit) - 0xd800) << 10) + (u32::from(low) - 0xdc00);
                    return char::from_u32(code).ok_or_else(|| lone(self));
                }
                self.pos = after_high;
                Err(lone(self))
            }
            0xdc00..=0xdfff => Err(lone(self)),
            _ => char::from_u32(u32::from(unit)).ok_or_else(|| lone(self)),
        }
    }
}

impl Serialize for Json {
    fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::Int(text) => {
                if let Ok(v) = text.parse::<i64>() {
                    serializer.serialize_i64(v)
                } else if let Ok(v) = text.parse::<u64>() {
                    serializer.serialize_u64(v)
                } else if let Ok(v) = text.parse::<i128>() {
                    serializer.serialize_i128(v)
                } else if let Ok(v) = text.parse::<u128>() {
                    serializer.serialize_u128(v)
                } else {
                    // Wider than any serde integer: through the wrapper that
                    // serde_json's `arbitrary_precision` uses, which this
                    // module's serializer reads as the number's exact text.
                    use ser::SerializeStruct;
                    let mut state = serializer.serialize_struct(SERDE_JSON_NUMBER, 1)?;
                    state.serialize_field(SERDE_JSON_NUMBER, text)?;
                    state.end()
                }
            }
            Self::Float(f) => serializer.serialize_f64(*f),
            Self::Str(s) => serializer.serialize_str(s),
            Self::List(items) => serializer.collect_seq(items),
            Self::Dict(entries) => serializer.collect_map(entries.iter().map(|(k, v)| (k, v))),
            Self::Unrepresentable(problem) => {
                Err(ser::Error::custom(problem.clone().into_error().to_string()))
            }
        }
    }
}

/// Writes `value` indented by two spaces per level, numbers as stored.
fn write_pretty(out: &mut String, value: &Json, indent: usize) {
    fn newline(out: &mut String, indent: usize) {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', indent * 2));
    }
    fn write_text(out: &mut String, s: &str) {
        // serde_json escapes only what JSON requires, so text stays readable.
        out.push_str(&Value::from(s).to_string());
    }
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Int(text) => out.push_str(text),
        Json::Float(f) => out.push_str(&float_repr(*f)),
        Json::Str(s) => write_text(out, s),
        // parse_json never returns one.
        Json::Unrepresentable(_) => out.push('?'),
        Json::List(items) if items.is_empty() => out.push_str("[]"),
        Json::Dict(entries) if entries.is_empty() => out.push_str("{}"),
        Json::List(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                newline(out, indent + 1);
                write_pretty(out, item, indent + 1);
            }
            newline(out, indent);
            out.push(']');
        }
        Json::Dict(entries) => {
            out.push('{');
            for (index, (key, item)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                newline(out, indent + 1);
                write_text(out, key);
                out.push_str(": ");
                write_pretty(out, item, indent + 1);
            }
            newline(out, indent);
            out.push('}');
        }
    }
}

// ---------------------------------------------------------------------------
// Deserializing from the parsed JSON (mirrors serde_json's `&Value`)
// ---------------------------------------------------------------------------

/// What deserializing from a [`Json`] fails with: a visitor's own error, or
/// an integer the visitor could not take, kept apart so the message can name
/// the value.
#[derive(Debug)]
pub(crate) enum DeError {
    Custom(String),
    WideInteger { value: String, reason: String },
}

impl DeError {
    /// The integer `text` was refused by a visitor with this error.
    fn about_integer(self, text: &str) -> Self {
        match self {
            Self::Custom(reason) => Self::WideInteger {
                value: shorten_digits(text),
                reason,
            },
            wide => wide,
        }
    }

    fn into_params(self, context: &'static str) -> ParamsError {
        match self {
            Self::Custom(message) => ParamsError::Decode {
                context,
                source: <serde_json::Error as de::Error>::custom(message),
            },
            Self::WideInteger { value, reason } => ParamsError::WideInteger { value, reason },
        }
    }
}

impl std::fmt::Display for DeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Custom(message) => f.write_str(message),
            Self::WideInteger { value, reason } => write!(f, "the integer {value}: {reason}"),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self::Custom(msg.to_string())
    }
}

/// A very long integer for a message: its first and last digits.
fn shorten_digits(text: &str) -> String {
    const KEEP: usize = 24;
    if text.len() <= 2 * KEEP + 10 {
        return text.to_owned();
    }
    // Digits and '-' are ASCII, so any byte offset is a char boundary.
    format!(
        "{}...{} ({} digits)",
        &text[..KEEP],
        &text[text.len() - KEEP..],
        text.trim_start_matches('-').len()
    )
}

fn deserialize_node<T: DeserializeOwned>(node: &Json) -> Result<T, DeError> {
    T::deserialize(node)
}

/// Hands an integer to a visitor: as `u64`/`i64` when it fits, as serde_json
/// does, else as `i128`/`u128`.
fn visit_int<'de, V: Visitor<'de>>(text: &str, visitor: V) -> Result<V::Value, DeError> {
    if let Ok(v) = text.parse::<u64>() {
        return visitor.visit_u64(v);
    }
    if let Ok(v) = text.parse::<i64>() {
        return visitor.visit_i64(v);
    }
    let visited = if let Ok(v) = text.parse::<i128>() {
        visitor.visit_i128(v)
    } else if let Ok(v) = text.parse::<u128>() {
        visitor.visit_u128(v)
    } else {
        Err(DeError::Custom(
            "it is wider than 128 bits, and no Rust integer type holds it".to_owned(),
        ))
    };
    visited.map_err(|error| error.about_integer(text))
}

impl<'de> de::Deserializer<'de> for &'de Json {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self {
            Json::Null => visitor.visit_unit(),
            Json::Bool(b) => visitor.visit_bool(*b),
            Json::Int(text) => visit_int(text, visitor),
            Json::Float(f) => visitor.visit_f64(*f),
            Json::Str(s) => visitor.visit_borrowed_str(s),
            Json::Unrepresentable(problem) => {
                Err(DeError::Custom(problem.clone().into_error().to_string()))
            }
            Json::List(items) => {
                let mut access = SeqAccess {
                    items: items.iter(),
                };
                let value = visitor.visit_seq(&mut access)?;
                match access.items.len() {
                    0 => Ok(value),
                    _ => Err(de::Error::invalid_length(
                        items.len(),
                        &"fewer elements in array",
                    )),
                }
            }
            Json::Dict(entries) => {
                let mut access = MapAccess {
                    entries: entries.iter(),
                    value: None,
                };
                let value = visitor.visit_map(&mut access)?;
                match access.entries.len() {
                    0 => Ok(value),
                    _ => Err(de::Error::invalid_length(
                        entries.len(),
                        &"fewer elements in map",
                    )),
                }
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self {
            Json::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self {
            Json::Str(variant) => {
                visitor.visit_enum(de::value::BorrowedStrDeserializer::new(variant))
            }
            Json::Dict(entries) => match entries.as_slice() {
                [(variant, value)] => visitor.visit_enum(EnumAccess { variant, value }),
                _ => Err(de::Error::invalid_value(
                    de::Unexpected::Map,
                    &"map with a single key",
                )),
            },
            other => Err(de::Error::invalid_type(
                other.unexpected(),
                &"string or map",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct SeqAccess<'de> {
    items: std::slice::Iter<'de, Json>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.items
            .next()
            .map(|item| seed.deserialize(item))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'de> {
    entries: std::slice::Iter<'de, (String, Json)>,
    value: Option<&'de Json>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(KeyDeserializer(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(value) => seed.deserialize(value),
            None => Err(de::Error::custom(
                "a map value was asked for before its key",
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumAccess<'de> {
    variant: &'de str,
    value: &'de Json,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = DeError;
    type Variant = &'de Json;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, &'de Json), DeError> {
        let variant = seed.deserialize(KeyDeserializer(self.variant))?;
        Ok((variant, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for &'de Json {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        <()>::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        match self {
            Json::List(_) => de::Deserializer::deserialize_any(self, visitor),
            other => Err(de::Error::invalid_type(
                other.unexpected(),
                &"tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self {
            Json::List(_) | Json::Dict(_) => de::Deserializer::deserialize_any(self, visitor),
            other => Err(de::Error::invalid_type(
                other.unexpected(),
                &"struct variant",
            )),
        }
    }
}

/// A dict key. Python writes int, float, bool and None keys as their JSON
/// text, so, like serde_json's map keys, a key reads as a number or bool
/// when the target type asks for one.
struct KeyDeserializer<'de>(&'de str);

impl<'de> KeyDeserializer<'de> {
    /// The key read as a JSON number, for a numeric target type.
    fn number<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let bare = self.0.starts_with(|c: char| c == '-' || c.is_ascii_digit())
            && !self.0.ends_with(|c: char| c.is_ascii_whitespace());
        match parse_json(self.0) {
            Ok(Json::Int(text)) if bare => visit_int(&text, visitor),
            Ok(Json::Float(float)) if bare => visitor.visit_f64(float),
            _ => Err(de::Error::invalid_type(
                de::Unexpected::Str(self.0),
                &visitor,
            )),
        }
    }
}

macro_rules! numeric_keys {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.number(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for KeyDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_borrowed_str(self.0)
    }

    numeric_keys! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            other => Err(de::Error::invalid_type(
                de::Unexpected::Str(other),
                &visitor,
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_enum(de::value::BorrowedStrDeserializer::new(self.0))
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct seq tuple tuple_struct
        map struct identifier ignored_any
    }
}

// ---------------------------------------------------------------------------
// Value tree
// ---------------------------------------------------------------------------

/// A serialized value, already in the shape Python's encoder sees it.
///
/// Numbers are kept as their final text and dict keys as their final, sorted
/// strings: both conversions can fail, and doing them while serializing keeps
/// rendering infallible.
#[derive(Debug)]
enum PyValue {
    Null,
    Bool(bool),
    /// Decimal integer or Python float `repr`.
    Number(String),
    Str(String),
    List(Vec<PyValue>),
    /// Entries sorted as `sort_keys=True` sorts them.
    Dict(Vec<(String, PyValue)>),
}

impl PyValue {
    /// Describes the value for error messages.
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a bool",
            Self::Number(_) => "a number",
            Self::Str(_) => "a string",
            Self::List(_) => "a sequence",
            Self::Dict(_) => "a map",
        }
    }
}

/// A dict key before conversion to a string, so it can be ordered the way
/// Python orders it.
#[derive(Debug)]
enum PyKey {
    Null,
    Bool(bool),
    Int(i128),
    /// Always finite: non-finite keys are rejected when serialized.
    Float(f64),
    Str(String),
}

impl PyKey {
    /// Python type name, for error messages.
    fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "None",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Float(_) => "float",
            Self::Str(_) => "str",
        }
    }

    /// Whether Python's `<` accepts this pair of keys. `None` compares with
    /// nothing, not even itself; bool, int and float compare numerically.
    fn comparable_with(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Null, _) | (_, Self::Null) => false,
            (Self::Str(_), Self::Str(_)) => true,
            (Self::Str(_), _) | (_, Self::Str(_)) => false,
            _ => true,
        }
    }

    /// Orders two keys already known to be comparable.
    fn python_cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Str(a), Self::Str(b)) => a.cmp(b),
            (Self::Float(a), Self::Float(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Self::Float(a), b) => b
                .as_int()
                .map_or(Ordering::Equal, |b| cmp_int_float(b, *a).reverse()),
            (a, Self::Float(b)) => a.as_int().map_or(Ordering::Equal, |a| cmp_int_float(a, *b)),
            (a, b) => a.as_int().cmp(&b.as_int()),
        }
    }

    /// The integer value of an int or bool key (Python's bool is an int).
    fn as_int(&self) -> Option<i128> {
        match self {
            Self::Bool(b) => Some(i128::from(*b)),
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The key as Python's encoder writes it.
    fn into_key_string(self) -> String {
        match self {
            Self::Null => "null".to_owned(),
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => float_repr(f),
            Self::Str(s) => s,
        }
    }
}

/// Compares an integer with a finite float exactly, as Python does (a plain
/// `as f64` conversion would round large integers).
fn cmp_int_float(int: i128, float: f64) -> Ordering {
    // Rounding is monotonic, so a strict inequality after rounding the
    // integer also holds for the exact integer.
    match (int as f64).partial_cmp(&float) {
        Some(Ordering::Less) => Ordering::Less,
        Some(Ordering::Greater) => Ordering::Greater,
        _ => {
            // The float equals a rounded i128, so it is integral and within
            // [-2^127, 2^127]; only 2^127 itself does not fit back into i128.
            if float >= i128::MAX as f64 {
                Ordering::Less
            } else {
                int.cmp(&(float as i128))
            }
        }
    }
}

/// Sorts dict entries like `sorted(d.items())` and stringifies the keys.
fn sort_entries(mut entries: Vec<(PyKey, PyValue)>) -> Result<PyValue, ParamsError> {
    // Python's sort never compares a lone key, so a single key of any kind
    // (even None) is fine; with two or more, every pair must be comparable.
    if let Some(((first, _), rest)) = entries.split_first()
        && let Some((other, _)) = rest.iter().find(|(key, _)| !first.comparable_with(key))
    {
        return Err(ParamsError::MixedKeyTypes {
            first: first.type_name(),
            second: other.type_name(),
        });
    }
    // Stable, like Python's sort, for keys that compare equal (e.g. 1 and 1.0).
    entries.sort_by(|(a, _), (b, _)| a.python_cmp(b));
    Ok(PyValue::Dict(
        entries
            .into_iter()
            .map(|(key, value)| (key.into_key_string(), value))
            .collect(),
    ))
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// Renders `[args, kwargs]`.
fn render_call(args: Vec<PyValue>, kwargs: Vec<(String, PyValue)>) -> String {
    let mut out = String::new();
    write_value(
        &mut out,
        &PyValue::List(vec![PyValue::List(args), PyValue::Dict(kwargs)]),
    );
    out
}

fn write_value(out: &mut String, value: &PyValue) {
    match value {
        PyValue::Null => out.push_str("null"),
        PyValue::Bool(true) => out.push_str("true"),
        PyValue::Bool(false) => out.push_str("false"),
        PyValue::Number(text) => out.push_str(text),
        PyValue::Str(s) => write_str(out, s),
        PyValue::List(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        PyValue::Dict(entries) => {
            out.push('{');
            for (index, (key, item)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_str(out, key);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Writes a string literal the way `ensure_ascii=True` does.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                // Python escapes UTF-16 code units, so astral characters
                // become surrogate pairs.
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str("\\u");
                    for shift in [12, 8, 4, 0] {
                        // The mask keeps the value below 16, so it fits a u8.
                        push_hex_digit(out, ((*unit >> shift) & 0xf) as u8);
                    }
                }
            }
        }
    }
    out.push('"');
}

/// Pushes one lowercase hex digit for a value below 16.
fn push_hex_digit(out: &mut String, nibble: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(char::from(DIGITS[usize::from(nibble & 0xf)]));
}

/// Python's `repr(float)` of a finite float.
fn float_repr(value: f64) -> String {
    let (digits, exponent) = shortest_digits(value.abs());

    let mut out = String::new();
    if value.is_sign_negative() {
        out.push('-');
    }
    if !(-4..16).contains(&exponent) {
        // `d[.ddd]e±XX`, without the `.0` that the plain form gets.
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            out.push('0');
        }
        out.push_str(&magnitude.to_string());
    } else if exponent >= 0 {
        // The exponent is below 16 here, so the cast cannot truncate.
        let int_len = exponent.unsigned_abs() as usize + 1;
        if digits.len() > int_len {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        } else {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            out.push_str(".0");
        }
    } else {
        // The exponent is in -4..=-1 here: `0.` and up to three zeros.
        out.push_str("0.");
        let zeros = (exponent.unsigned_abs() - 1) as usize;
        out.extend(std::iter::repeat_n('0', zeros));
        out.push_str(&digits);
    }
    out
}

/// Splits a float's scientific form into its significant digits and decimal
/// exponent, so that `value == 0.d1d2d3... * 10^(exponent + 1)`.
fn split_scientific(scientific: &str) -> (String, i32) {
    // std's `LowerExp` always writes `<mantissa>e<exponent>` with a decimal
    // exponent, so the fallbacks are never taken.
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific, "0"));
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

/// The shortest digits that round-trip to a finite, non-negative `value`,
/// with their decimal exponent, chosen as Python's `repr` chooses them.
fn shortest_digits(value: f64) -> (String, i32) {
    // `{:e}` yields the shortest round-tripping digits closest to the value,
    // as Python does, e.g. `1.5e0` or `1e-5`.
    let (digits, exponent) = split_scientific(&format!("{value:e}"));
    match python_tie_break(value, &digits, exponent) {
        Some(even) => (even, exponent),
        None => (digits, exponent),
    }
}

/// Python's repr (David Gay's dtoa) resolves an exact tie between two
/// equally close shortest candidates to the even last digit, while Rust
/// rounds the tie up (`982075422482557.25` is `...557.2` in Python but
/// `...557.3` in Rust). Returns the even candidate when `digits` ends in an
/// odd digit that lost such a tie.
fn python_tie_break(value: f64, digits: &str, exponent: i32) -> Option<String> {
    let (prefix, last) = digits.split_at(digits.len().checked_sub(1)?);
    let last = last.parse::<u8>().ok()?;
    if last % 2 == 0 {
        return None;
    }
    // Both neighbours of an odd digit are even; a carry past 9 would shorten
    // the digits, and then `{:e}` would already have chosen them.
    let neighbours = [last.checked_sub(1), Some(last + 1).filter(|d| *d <= 9)];
    for neighbour in neighbours.into_iter().flatten() {
        let midpoint = format!("{prefix}{}5", neighbour.min(last));
        if !is_exactly(value, &midpoint, exponent) {
            continue;
        }
        let candidate = format!("{prefix}{neighbour}");
        // Near a power of two the rounding interval is lopsided, so the even
        // candidate is only usable if it still round-trips.
        if parse_digits(&candidate, exponent) == Some(value) {
            return Some(candidate);
        }
    }
    None
}

/// Parses `d1.d2d3... * 10^exponent`.
fn parse_digits(digits: &str, exponent: i32) -> Option<f64> {
    let (first, rest) = digits.split_at(1.min(digits.len()));
    format!("{first}.{rest}0e{exponent}").parse().ok()
}

/// Whether `value` is exactly `d1.d2d3... * 10^exponent`.
fn is_exactly(value: f64, digits: &str, exponent: i32) -> bool {
    // Cheap necessary condition first: an exact decimal parses to itself.
    if parse_digits(digits, exponent) != Some(value) {
        return false;
    }
    // Every f64 has at most 767 significant decimal digits, so this
    // precision prints its exact expansion.
    let (exact, exact_exponent) = split_scientific(&format!("{value:.800e}"));
    let exact = exact.trim_end_matches('0');
    let digits = digits.trim_end_matches('0');
    match digits.strip_prefix('0') {
        // A leading zero shifts the exponent down by one.
        Some(shifted) => exact == shifted && exact_exponent == exponent - 1,
        None => exact == digits && exact_exponent == exponent,
    }
}

fn finite(value: f64) -> Result<f64, ParamsError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ParamsError::NonFiniteFloat { value })
    }
}

fn u128_to_i128(value: u128) -> Result<i128, ParamsError> {
    i128::try_from(value).map_err(|_| ParamsError::IntegerOutOfRange { value })
}

// ---------------------------------------------------------------------------
// Value serializer (mirrors serde_json::value::Serializer)
// ---------------------------------------------------------------------------

struct ValueSerializer;

fn int_value(value: impl Into<i128>) -> PyValue {
    PyValue::Number(value.into().to_string())
}

fn float_value(value: f64) -> Result<PyValue, ParamsError> {
    finite(value).map(|value| PyValue::Number(float_repr(value)))
}

impl ser::Serializer for ValueSerializer {
    type Ok = PyValue;
    type Error = ParamsError;
    type SerializeSeq = SeqSerializer;
    type SerializeTuple = SeqSerializer;
    type SerializeTupleStruct = SeqSerializer;
    type SerializeTupleVariant = TupleVariantSerializer;
    type SerializeMap = MapSerializer;
    type SerializeStruct = MapSerializer;
    type SerializeStructVariant = StructVariantSerializer;

    fn serialize_bool(self, v: bool) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<PyValue, ParamsError> {
        Ok(int_value(v))
    }

    fn serialize_i16(self, v: i16) -> Result<PyValue, ParamsError> {
        Ok(int_value(v))
    }

    fn serialize_i32(self, v: i32) -> Result<PyValue, ParamsError> {
        Ok(int_value(v))
    }

    fn serialize_i64(self, v: i64) -> Result<PyValue, ParamsError> {
        Ok(int_value(v))
    }

    fn serialize_i128(self, v: i128) -> Result<PyValue, ParamsError> {
        Ok(int_value(v))
    }

    fn serialize_u8(self, v: u8) -> Result<PyValue, ParamsError> {
        Ok(int_value(v))
    }

    fn serialize_u16(self, v: u16) -> Result<PyValue, ParamsError> {
        Ok(int_value(v))
    }

    fn serialize_u32(self, v: u32) -> Result<PyValue, ParamsError> {
        Ok(int_value(v))
    }

    fn serialize_u64(self, v: u64) -> Result<PyValue, ParamsError> {
        Ok(int_value(v))
    }

    fn serialize_u128(self, v: u128) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Number(v.to_string()))
    }

    fn serialize_f32(self, v: f32) -> Result<PyValue, ParamsError> {
        float_value(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<PyValue, ParamsError> {
        float_value(v)
    }

    fn serialize_char(self, v: char) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Str(v.to_string()))
    }

    fn serialize_str(self, v: &str) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Str(v.to_owned()))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<PyValue, ParamsError> {
        Ok(PyValue::List(v.iter().copied().map(int_value).collect()))
    }

    fn serialize_none(self) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Null)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<PyValue, ParamsError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Null)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Null)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Str(variant.to_owned()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<PyValue, ParamsError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Dict(vec![(
            variant.to_owned(),
            value.serialize(self)?,
        )]))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSerializer, ParamsError> {
        Ok(SeqSerializer {
            items: Vec::with_capacity(len.unwrap_or(0)),
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqSerializer, ParamsError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqSerializer, ParamsError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<TupleVariantSerializer, ParamsError> {
        Ok(TupleVariantSerializer {
            variant,
            items: Vec::with_capacity(len),
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<MapSerializer, ParamsError> {
        Ok(MapSerializer {
            entries: Vec::with_capacity(len.unwrap_or(0)),
            next_key: None,
            token: None,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<MapSerializer, ParamsError> {
        Ok(MapSerializer {
            entries: Vec::with_capacity(len),
            next_key: None,
            token: SerdeJsonToken::from_struct_name(name),
        })
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructVariantSerializer, ParamsError> {
        Ok(StructVariantSerializer {
            variant,
            fields: Vec::with_capacity(len),
        })
    }
}

struct SeqSerializer {
    items: Vec<PyValue>,
}

impl ser::SerializeSeq for SeqSerializer {
    type Ok = PyValue;
    type Error = ParamsError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        self.items.push(value.serialize(ValueSerializer)?);
        Ok(())
    }

    fn end(self) -> Result<PyValue, ParamsError> {
        Ok(PyValue::List(self.items))
    }
}

impl ser::SerializeTuple for SeqSerializer {
    type Ok = PyValue;
    type Error = ParamsError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<PyValue, ParamsError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqSerializer {
    type Ok = PyValue;
    type Error = ParamsError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<PyValue, ParamsError> {
        ser::SerializeSeq::end(self)
    }
}

struct TupleVariantSerializer {
    variant: &'static str,
    items: Vec<PyValue>,
}

impl ser::SerializeTupleVariant for TupleVariantSerializer {
    type Ok = PyValue;
    type Error = ParamsError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        self.items.push(value.serialize(ValueSerializer)?);
        Ok(())
    }

    fn end(self) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Dict(vec![(
            self.variant.to_owned(),
            PyValue::List(self.items),
        )]))
    }
}

struct MapSerializer {
    entries: Vec<(PyKey, PyValue)>,
    next_key: Option<PyKey>,
    /// Set when serde_json smuggles text through a magic struct.
    token: Option<SerdeJsonToken>,
}

/// The struct name by which serde_json (feature `arbitrary_precision`) passes
/// a number's text through a serializer; [`Json`] uses it too, for integers
/// wider than 128 bits.
const SERDE_JSON_NUMBER: &str = "$serde_json::private::Number";

/// Magic struct names by which serde_json passes a number's text (feature
/// `arbitrary_precision`) or raw JSON (feature `raw_value`) through any
/// serializer. Either feature can be switched on by another crate in the
/// build, so both are understood rather than written out as dicts.
#[derive(Debug, Clone, Copy)]
enum SerdeJsonToken {
    Number,
    RawValue,
}

impl SerdeJsonToken {
    fn from_struct_name(name: &str) -> Option<Self> {
        match name {
            SERDE_JSON_NUMBER => Some(Self::Number),
            "$serde_json::private::RawValue" => Some(Self::RawValue),
            _ => None,
        }
    }

    /// Converts the text carried by the magic struct into a value.
    fn into_value(self, entries: Vec<(PyKey, PyValue)>) -> Result<PyValue, ParamsError> {
        let text = match entries.as_slice() {
            [(_, PyValue::Str(text))] => text,
            _ => {
                return Err(ParamsError::Custom(format!(
                    "serde_json's {self:?} wrapper did not carry its text"
                )));
            }
        };
        match self {
            // Both are read by this module's parser, so that an integer of
            // any width keeps its digits (serde_json would make a float of
            // one wider than 64 bits).
            Self::Number => match parse_json(text) {
                Ok(Json::Int(digits)) => Ok(PyValue::Number(digits)),
                Ok(Json::Float(float)) => float_value(float),
                Ok(_) | Err(ParamsError::Malformed { .. }) => Err(ParamsError::Custom(format!(
                    "serde_json number {text:?} is not a number"
                ))),
                Err(other) => Err(other),
            },
            Self::RawValue => match parse_json(text) {
                Ok(value) => value.serialize(ValueSerializer),
                Err(ParamsError::Malformed { reason }) => Err(ParamsError::Custom(format!(
                    "invalid raw JSON value: {reason}"
                ))),
                Err(other) => Err(other),
            },
        }
    }
}

impl ser::SerializeMap for MapSerializer {
    type Ok = PyValue;
    type Error = ParamsError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ParamsError> {
        self.next_key = Some(key.serialize(KeySerializer)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        let key = self.next_key.take().ok_or_else(|| {
            ParamsError::Custom("serialize_value was called before serialize_key".to_owned())
        })?;
        self.entries.push((key, value.serialize(ValueSerializer)?));
        Ok(())
    }

    fn end(self) -> Result<PyValue, ParamsError> {
        sort_entries(self.entries)
    }
}

impl ser::SerializeStruct for MapSerializer {
    type Ok = PyValue;
    type Error = ParamsError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ParamsError> {
        self.entries.push((
            PyKey::Str(key.to_owned()),
            value.serialize(ValueSerializer)?,
        ));
        Ok(())
    }

    fn end(self) -> Result<PyValue, ParamsError> {
        match self.token {
            Some(token) => token.into_value(self.entries),
            None => sort_entries(self.entries),
        }
    }
}

struct StructVariantSerializer {
    variant: &'static str,
    fields: Vec<(PyKey, PyValue)>,
}

impl ser::SerializeStructVariant for StructVariantSerializer {
    type Ok = PyValue;
    type Error = ParamsError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ParamsError> {
        self.fields.push((
            PyKey::Str(key.to_owned()),
            value.serialize(ValueSerializer)?,
        ));
        Ok(())
    }

    fn end(self) -> Result<PyValue, ParamsError> {
        Ok(PyValue::Dict(vec![(
            self.variant.to_owned(),
            sort_entries(self.fields)?,
        )]))
    }
}

// ---------------------------------------------------------------------------
// Key serializer
// ---------------------------------------------------------------------------

/// Serializes a map key into a [`PyKey`], accepting what Python's encoder
/// accepts as a key (str, int, float, bool, None).
struct KeySerializer;

fn unsupported_key<T>(kind: &'static str) -> Result<T, ParamsError> {
    Err(ParamsError::UnsupportedKey { kind })
}

impl ser::Serializer for KeySerializer {
    type Ok = PyKey;
    type Error = ParamsError;
    type SerializeSeq = Impossible<PyKey, ParamsError>;
    type SerializeTuple = Impossible<PyKey, ParamsError>;
    type SerializeTupleStruct = Impossible<PyKey, ParamsError>;
    type SerializeTupleVariant = Impossible<PyKey, ParamsError>;
    type SerializeMap = Impossible<PyKey, ParamsError>;
    type SerializeStruct = Impossible<PyKey, ParamsError>;
    type SerializeStructVariant = Impossible<PyKey, ParamsError>;

    fn serialize_bool(self, v: bool) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Int(v.into()))
    }

    fn serialize_i16(self, v: i16) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Int(v.into()))
    }

    fn serialize_i32(self, v: i32) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Int(v.into()))
    }

    fn serialize_i64(self, v: i64) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Int(v.into()))
    }

    fn serialize_i128(self, v: i128) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Int(v))
    }

    fn serialize_u8(self, v: u8) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Int(v.into()))
    }

    fn serialize_u16(self, v: u16) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Int(v.into()))
    }

    fn serialize_u32(self, v: u32) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Int(v.into()))
    }

    fn serialize_u64(self, v: u64) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Int(v.into()))
    }

    fn serialize_u128(self, v: u128) -> Result<PyKey, ParamsError> {
        u128_to_i128(v).map(PyKey::Int)
    }

    fn serialize_f32(self, v: f32) -> Result<PyKey, ParamsError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<PyKey, ParamsError> {
        finite(v).map(PyKey::Float)
    }

    fn serialize_char(self, v: char) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Str(v.to_string()))
    }

    fn serialize_str(self, v: &str) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Str(v.to_owned()))
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<PyKey, ParamsError> {
        unsupported_key("bytes")
    }

    fn serialize_none(self) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Null)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<PyKey, ParamsError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Null)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Null)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<PyKey, ParamsError> {
        Ok(PyKey::Str(variant.to_owned()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<PyKey, ParamsError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<PyKey, ParamsError> {
        unsupported_key("enum variant with data")
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, ParamsError> {
        unsupported_key("sequence")
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, ParamsError> {
        unsupported_key("tuple")
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, ParamsError> {
        unsupported_key("tuple struct")
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, ParamsError> {
        unsupported_key("enum variant with data")
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, ParamsError> {
        unsupported_key("map")
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, ParamsError> {
        unsupported_key("struct")
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, ParamsError> {
        unsupported_key("enum variant with data")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::{Deserialize, Serialize, Serializer};
    use serde_json::json;

    use super::*;

    /// Serializes its pairs as a map, so tests can build keys of any type and
    /// in any order (including ones Rust maps cannot hold).
    struct Pairs<K, V>(Vec<(K, V)>);

    impl<K: Serialize, V: Serialize> Serialize for Pairs<K, V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
        }
    }

    /// A key whose Python type varies per entry.
    #[derive(Serialize)]
    #[serde(untagged)]
    enum AnyKey {
        Bool(bool),
        Int(i128),
        Float(f64),
        Str(&'static str),
        None(Option<i32>),
    }

    struct Bytes(&'static [u8]);

    impl Serialize for Bytes {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    fn py(value: &impl Serialize) -> String {
        to_python_json(value).unwrap()
    }

    fn assert_vector(name: &str, params: &str, expected_params: &str, expected_hash: &str) {
        assert_eq!(params, expected_params);
        assert_eq!(task_hash(name, params), expected_hash);
    }

    // --- Python test vectors -------------------------------------------------

    #[test]
    fn vector_no_arguments() {
        let expected = "[[], {}]";
        let hash = "5cacd7d4f2c0115060ced6538a800cf0eb0bd0d1";
        assert_vector("mytask", &encode_call(&(), &()).unwrap(), expected, hash);
        assert_vector("mytask", &encode_params(&()).unwrap(), expected, hash);
        let no_args: Vec<i32> = Vec::new();
        let no_kwargs: BTreeMap<String, i32> = BTreeMap::new();
        assert_vector(
            "mytask",
            &encode_call(&no_args, &no_kwargs).unwrap(),
            expected,
            hash,
        );
    }

    #[test]
    fn vector_single_int_arg() {
        let name = "test_background_gets_scheduled";
        let expected = "[[1], {}]";
        let hash = "e34cb140774b599c32e2c256b9c47001cff167d8";
        assert_vector(name, &encode_call(&(1,), &()).unwrap(), expected, hash);
        assert_vector(name, &encode_params(&(1,)).unwrap(), expected, hash);
        assert_vector(name, &encode_params(&1).unwrap(), expected, hash);
    }

    #[test]
    fn vector_unicode_and_nested_kwargs() {
        let params = encode_call(&(1, "é"), &json!({"b": 2, "a": {"z": 1, "y": 2}})).unwrap();
        assert_vector(
            "mytask",
            &params,
            r#"[[1, "\u00e9"], {"a": {"y": 2, "z": 1}, "b": 2}]"#,
            "a642c3045f5b5c283081651418d872f74aad6e3e",
        );
    }

    #[test]
    fn vector_float_bool_none_kwargs() {
        #[derive(Serialize)]
        struct Kwargs {
            x: Option<i32>,
            ok: bool,
            n: f64,
        }
        let expected = r#"[["a@b.c"], {"n": 1.5, "ok": true, "x": null}]"#;
        let hash = "b13d70dae85a84d640c9f2d4c88b8843f6d276fa";
        let typed = Kwargs {
            x: None,
            ok: true,
            n: 1.5,
        };
        assert_vector(
            "send",
            &encode_call(&("a@b.c",), &typed).unwrap(),
            expected,
            hash,
        );
        let untyped = json!({"n": 1.5, "ok": true, "x": null});
        assert_vector(
            "send",
            &encode_call(&["a@b.c"], &untyped).unwrap(),
            expected,
            hash,
        );
    }

    #[test]
    fn vector_int_keyed_dict_arg() {
        let map: HashMap<u32, i32> = HashMap::from([(22222, 2), (11111, 1)]);
        let expected = r#"[[{"11111": 1, "22222": 2}], {}]"#;
        let hash = "b2eab0915d72f2527fe1102e2807d0b7379592ab";
        assert_vector("k", &encode_call(&(&map,), &()).unwrap(), expected, hash);
        assert_vector("k", &encode_params(&(&map,)).unwrap(), expected, hash);
    }

    #[test]
    fn vector_cjk_and_astral() {
        let params = encode_call(&("日本",), &BTreeMap::from([("emoji", "😀")])).unwrap();
        assert_vector(
            "u",
            &params,
            r#"[["\u65e5\u672c"], {"emoji": "\ud83d\ude00"}]"#,
            "1972653ac92a1a21f2ad63bae0e59aa9b3d9483f",
        );
    }

    // --- Floats and integers -----------------------------------------------

    #[test]
    fn floats_match_python_repr() {
        // Expected values printed by python3's json.dumps / repr.
        let cases: &[(f64, &str)] = &[
            (1.5, "1.5"),
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (1.2345e20, "1.2345e+20"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (1e15, "1000000000000000.0"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (123456789.125, "123456789.125"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1e100, "1e+100"),
            (-2.5e-10, "-2.5e-10"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.00012345, "0.00012345"),
            (123.456, "123.456"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0 / 3.0, "0.6666666666666666"),
            (1e22, "1e+22"),
            (12345678901234567890.0, "1.2345678901234567e+19"),
            // Exact ties between two shortest candidates go to the even digit
            // (written as sums because the exact literals trip clippy).
            (982075422482557.0 + 0.25, "982075422482557.2"),
            (-982075422482557.0 - 0.25, "-982075422482557.2"),
            (88480043739357.0 + 0.125, "88480043739357.12"),
            (268206372821719.0 + 0.625, "268206372821719.62"),
            (2.5, "2.5"),
            (1.25e20, "1.25e+20"),
        ];
        for &(value, expected) in cases {
            assert_eq!(py(&value), expected, "repr of {value:?}");
        }
    }

    #[test]
    fn f32_is_widened_to_f64() {
        assert_eq!(py(&1.1f32), "1.100000023841858");
    }

    #[test]
    fn non_finite_floats_are_rejected() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                encode_params(&value),
                Err(ParamsError::NonFiniteFloat { .. })
            ));
        }
        assert!(matches!(
            encode_call(&(1, vec![f32::NAN]), &()),
            Err(ParamsError::NonFiniteFloat { .. })
        ));
        assert!(matches!(
            to_python_json(&Pairs(vec![(f64::INFINITY, 1)])),
            Err(ParamsError::NonFiniteFloat { .. })
        ));
    }

    #[test]
    fn wide_integers() {
        assert_eq!(
            py(&(i128::MAX, i128::MIN, u64::MAX)),
            "[170141183460469231731687303715884105727, \
             -170141183460469231731687303715884105728, 18446744073709551615]"
        );
        assert_eq!(py(&(i128::MAX as u128)), i128::MAX.to_string());
        assert_eq!(py(&u128::MAX), u128::MAX.to_string());
        // Keys are compared as i128, so wider ones are refused.
        assert!(matches!(
            to_python_json(&BTreeMap::from([(u128::MAX, 1)])),
            Err(ParamsError::IntegerOutOfRange { value: u128::MAX })
        ));
    }

    // --- Keys ------------------------------------------------------------

    #[test]
    fn int_keys_sort_numerically() {
        let map = BTreeMap::from([(2i64, "a"), (10, "b"), (-1, "c")]);
        assert_eq!(py(&map), r#"{"-1": "c", "2": "a", "10": "b"}"#);
    }

    #[test]
    fn str_keys_sort_by_code_point() {
        let map = HashMap::from([
            ("B", 1),
            ("a", 2),
            ("é", 3),
            ("Z", 4),
            ("_", 5),
            ("😀", 6),
            ("\u{ffff}", 7),
        ]);
        assert_eq!(
            py(&map),
            r#"{"B": 1, "Z": 4, "_": 5, "a": 2, "\u00e9": 3, "\uffff": 7, "\ud83d\ude00": 6}"#
        );
    }

    #[test]
    fn keys_sort_recursively() {
        let value = json!({"b": [{"d": 1, "c": {"f": 1, "e": 2}}], "a": {}});
        assert_eq!(
            py(&value),
            r#"{"a": {}, "b": [{"c": {"e": 2, "f": 1}, "d": 1}]}"#
        );
    }

    #[test]
    fn numeric_keys_of_mixed_types_compare_numerically() {
        let keys = Pairs(vec![
            (AnyKey::Bool(true), 1),
            (AnyKey::Float(0.5), 2),
            (AnyKey::Int(3), 3),
            (AnyKey::Float(-2.5), 4),
        ]);
        assert_eq!(py(&keys), r#"{"-2.5": 4, "0.5": 2, "true": 1, "3": 3}"#);
        let keys = Pairs(vec![
            (AnyKey::Bool(false), 1),
            (AnyKey::Int(-1), 2),
            (AnyKey::Float(0.5), 3),
        ]);
        assert_eq!(py(&keys), r#"{"-1": 2, "false": 1, "0.5": 3}"#);
        assert_eq!(
            py(&Pairs(vec![(1.5, 1), (1e16, 2)])),
            r#"{"1.5": 1, "1e+16": 2}"#
        );
    }

    #[test]
    fn int_float_key_comparison_is_exact() {
        let big = 9007199254740993i128; // 2^53 + 1, not representable as f64
        let keys = Pairs(vec![
            (AnyKey::Int(big), 1),
            (AnyKey::Float(2f64.powi(53)), 2),
        ]);
        assert_eq!(
            py(&keys),
            r#"{"9007199254740992.0": 2, "9007199254740993": 1}"#
        );
        let keys = Pairs(vec![
            (AnyKey::Float(2f64.powi(127)), 2),
            (AnyKey::Int(i128::MAX), 1),
        ]);
        assert_eq!(
            py(&keys),
            r#"{"170141183460469231731687303715884105727": 1, "1.7014118346046923e+38": 2}"#
        );
    }

    #[test]
    fn none_key_alone_is_allowed() {
        assert_eq!(py(&Pairs(vec![(None::<i32>, 1)])), r#"{"null": 1}"#);
        assert_eq!(py(&Pairs(vec![((), 1)])), r#"{"null": 1}"#);
    }

    #[test]
    fn mixed_key_types_are_rejected() {
        let str_and_int = Pairs(vec![(AnyKey::Str("a"), 1), (AnyKey::Int(1), 2)]);
        assert!(matches!(
            to_python_json(&str_and_int),
            Err(ParamsError::MixedKeyTypes {
                first: "str",
                second: "int"
            })
        ));
        let int_and_none = Pairs(vec![(AnyKey::Int(1), 1), (AnyKey::None(None), 2)]);
        assert!(matches!(
            to_python_json(&int_and_none),
            Err(ParamsError::MixedKeyTypes {
                first: "int",
                second: "None"
            })
        ));
        let none_first = Pairs(vec![(AnyKey::None(None), 1), (AnyKey::Str("a"), 2)]);
        assert!(matches!(
            encode_params(&none_first),
            Err(ParamsError::MixedKeyTypes { .. })
        ));
        let str_and_bool = Pairs(vec![(AnyKey::Str("a"), 1), (AnyKey::Bool(true), 2)]);
        let error = to_python_json(&str_and_bool).unwrap_err();
        assert!(error.to_string().contains("str and bool"), "{error}");
    }

    #[test]
    fn unsupported_keys_are_rejected() {
        let tuple_keys = BTreeMap::from([((1, 2), 3)]);
        assert!(matches!(
            to_python_json(&tuple_keys),
            Err(ParamsError::UnsupportedKey { kind: "tuple" })
        ));
        let vec_keys = Pairs(vec![(vec![1], 1)]);
        assert!(matches!(
            to_python_json(&vec_keys),
            Err(ParamsError::UnsupportedKey { kind: "sequence" })
        ));
    }

    #[test]
    fn enum_and_char_keys() {
        #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
        enum Color {
            Red,
            Blue,
        }
        let map = BTreeMap::from([(Color::Red, 1), (Color::Blue, 2)]);
        assert_eq!(py(&map), r#"{"Blue": 2, "Red": 1}"#);
        assert_eq!(py(&BTreeMap::from([('é', 1)])), r#"{"\u00e9": 1}"#);
    }

    #[test]
    fn int_keyed_map_round_trips() {
        let map: HashMap<u32, i32> = HashMap::from([(22222, 2), (11111, 1)]);
        let params = encode_params(&map).unwrap();
        assert_eq!(params, r#"[[], {"11111": 1, "22222": 2}]"#);
        assert_eq!(decode_params::<HashMap<u32, i32>>(&params).unwrap(), map);

        let stored = r#"[[{"11111": 1, "22222": 2}], {}]"#;
        let (args,): (BTreeMap<i64, i32>,) = decode_params(stored).unwrap();
        assert_eq!(args, BTreeMap::from([(11111, 1), (22222, 2)]));
    }

    // --- Strings ---------------------------------------------------------

    #[test]
    fn strings_are_escaped_like_ensure_ascii() {
        let s = "a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1}\u{1f}\u{7f}\u{80} é\u{2028}😀~";
        // python3 -c 'import json; print(json.dumps([s], sort_keys=True))'
        assert_eq!(
            py(&[s]),
            r#"["a\"b\\c\n\r\t\b\f\u0000\u0001\u001f\u007f\u0080 \u00e9\u2028\ud83d\ude00~"]"#
        );
        assert_eq!(py(&'😀'), r#""\ud83d\ude00""#);
        assert_eq!(py(&" !/~"), r#"" !/~""#);
    }

    #[test]
    fn escaped_output_parses_back() {
        let s = "a\"b\\c\n\u{7f}é😀\u{0}";
        let (args, _) = decode_call(&encode_call(&(s,), &()).unwrap()).unwrap();
        assert_eq!(args, vec![json!(s)]);
    }

    // --- serde data model --------------------------------------------------

    #[test]
    fn serde_json_values_serialize_through() {
        let value = json!({"b": [1, 2.5, null, true], "a": "x"});
        assert_eq!(py(&value), r#"{"a": "x", "b": [1, 2.5, null, true]}"#);
        assert_eq!(py(&json!([])), "[]");
        assert_eq!(py(&json!({})), "{}");
    }

    /// Serializes like serde_json's `Number` (feature `arbitrary_precision`)
    /// or `RawValue` (feature `raw_value`) do, via a magic struct name.
    struct Smuggled(&'static str, &'static str);

    impl Serialize for Smuggled {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut state = serializer.serialize_struct(self.0, 1)?;
            state.serialize_field(self.0, self.1)?;
            state.end()
        }
    }

    #[test]
    fn serde_json_magic_structs_are_understood() {
        let number = "$serde_json::private::Number";
        let raw = "$serde_json::private::RawValue";
        assert_eq!(py(&Smuggled(number, "12")), "12");
        assert_eq!(py(&Smuggled(number, "1.50")), "1.5");
        assert_eq!(py(&Smuggled(number, "1E5")), "100000.0");
        assert_eq!(
            py(&Smuggled(raw, r#"{"b": [1, 1e5], "a": "\u00e9"}"#)),
            r#"{"a": "\u00e9", "b": [1, 100000.0]}"#
        );
        assert!(matches!(
            to_python_json(&Smuggled(raw, "{")),
            Err(ParamsError::Custom(_))
        ));
        // Ordinary structs with other names stay dicts.
        assert_eq!(py(&Smuggled("Plain", "x")), r#"{"Plain": "x"}"#);
    }

    #[test]
    fn bytes_become_lists_of_ints() {
        assert_eq!(py(&Bytes(&[1, 2, 255])), "[1, 2, 255]");
    }

    #[test]
    fn option_fields() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Params {
            to: String,
            cc: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none", default)]
            bcc: Option<String>,
            reply_to: Option<String>,
        }
        let params = Params {
            to: "a@b.c".into(),
            cc: None,
            bcc: None,
            reply_to: Some("r@b.c".into()),
        };
        let text = encode_params(&params).unwrap();
        assert_eq!(
            text,
            r#"[[], {"cc": null, "reply_to": "r@b.c", "to": "a@b.c"}]"#
        );
        assert_eq!(decode_params::<Params>(&text).unwrap(), params);
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Action {
        Ping,
        Retry(u32),
        Move(i32, i32),
        Send { to: String, urgent: bool },
    }

    #[test]
    fn enum_variants() {
        let cases = [
            (Action::Ping, r#"[["Ping"], {}]"#),
            (Action::Retry(3), r#"[[], {"Retry": 3}]"#),
            (Action::Move(1, -2), r#"[[], {"Move": [1, -2]}]"#),
            (
                Action::Send {
                    to: "x".into(),
                    urgent: true,
                },
                r#"[[], {"Send": {"to": "x", "urgent": true}}]"#,
            ),
        ];
        for (action, expected) in cases {
            let text = encode_params(&action).unwrap();
            assert_eq!(text, expected);
            assert_eq!(decode_params::<Action>(&text).unwrap(), action);
        }
    }

    #[test]
    fn struct_variant_fields_are_sorted() {
        #[derive(Serialize)]
        enum Op {
            Set { z: i32, a: i32 },
        }
        assert_eq!(py(&Op::Set { z: 1, a: 2 }), r#"{"Set": {"a": 2, "z": 1}}"#);
    }

    #[test]
    fn newtype_and_unit_structs() {
        #[derive(Serialize)]
        struct Id(u64);
        #[derive(Serialize)]
        struct Marker;
        #[derive(Serialize)]
        struct Point(i32, i32);
        assert_eq!(encode_params(&Id(7)).unwrap(), "[[7], {}]");
        assert_eq!(encode_params(&Marker).unwrap(), "[[], {}]");
        assert_eq!(encode_params(&Point(1, 2)).unwrap(), "[[1, 2], {}]");
    }

    // --- Layouts and round trips --------------------------------------------

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Email {
        to: String,
        subject: String,
        retries: u32,
        weight: f64,
        tags: Vec<String>,
    }

    fn email() -> Email {
        Email {
            to: "a@b.c".into(),
            subject: "Grüße".into(),
            retries: 3,
            weight: 0.25,
            tags: vec!["x".into(), "y".into()],
        }
    }

    #[test]
    fn struct_params_round_trip() {
        let text = encode_params(&email()).unwrap();
        assert_eq!(
            text,
            r#"[[], {"retries": 3, "subject": "Gr\u00fc\u00dfe", "tags": ["x", "y"], "to": "a@b.c", "weight": 0.25}]"#
        );
        assert_eq!(decode_params::<Email>(&text).unwrap(), email());
    }

    #[test]
    fn struct_as_kwargs_in_encode_call() {
        let text = encode_call(&(), &email()).unwrap();
        assert_eq!(text, encode_params(&email()).unwrap());
    }

    #[test]
    fn tuple_params_round_trip() {
        let params = (1, "x".to_owned(), 2.5);
        let text = encode_params(&params).unwrap();
        assert_eq!(text, r#"[[1, "x", 2.5], {}]"#);
        assert_eq!(decode_params::<(i32, String, f64)>(&text).unwrap(), params);

        let single = encode_params(&(5,)).unwrap();
        assert_eq!(decode_params::<(i32,)>(&single).unwrap(), (5,));
    }

    #[test]
    fn vec_params_round_trip() {
        let text = encode_params(&vec![1, 2]).unwrap();
        assert_eq!(text, "[[1, 2], {}]");
        assert_eq!(decode_params::<Vec<i32>>(&text).unwrap(), vec![1, 2]);
        let empty = encode_params(&Vec::<i32>::new()).unwrap();
        assert_eq!(empty, "[[], {}]");
        assert_eq!(
            decode_params::<Vec<i32>>(&empty).unwrap(),
            Vec::<i32>::new()
        );
    }

    #[test]
    fn unit_params_round_trip() {
        let text = encode_params(&()).unwrap();
        assert_eq!(text, "[[], {}]");
        decode_params::<()>(&text).unwrap();
        assert_eq!(encode_params(&None::<i32>).unwrap(), "[[], {}]");
        assert_eq!(decode_params::<Option<i32>>(&text).unwrap(), None);
    }

    #[test]
    fn all_optional_struct_decodes_from_no_arguments() {
        #[derive(Deserialize, Debug, PartialEq, Default)]
        struct Opts {
            #[serde(default)]
            limit: Option<u32>,
        }
        assert_eq!(decode_params::<Opts>("[[], {}]").unwrap(), Opts::default());
    }

    #[test]
    fn single_scalar_params_round_trip() {
        let text = encode_params(&42u8).unwrap();
        assert_eq!(text, "[[42], {}]");
        assert_eq!(decode_params::<u8>(&text).unwrap(), 42);

        let text = encode_params("hi").unwrap();
        assert_eq!(text, r#"[["hi"], {}]"#);
        assert_eq!(decode_params::<String>(&text).unwrap(), "hi");

        let text = encode_params(&false).unwrap();
        assert_eq!(text, "[[false], {}]");
        assert!(!decode_params::<bool>(&text).unwrap());

        assert_eq!(encode_params(&Some(1.5)).unwrap(), "[[1.5], {}]");
        assert_eq!(encode_params(&'x').unwrap(), r#"[["x"], {}]"#);
    }

    #[test]
    fn encode_call_rejects_wrong_shapes() {
        assert!(matches!(
            encode_call(&5, &()),
            Err(ParamsError::NotAnArgsList { found: "a number" })
        ));
        assert!(matches!(
            encode_call(&email(), &()),
            Err(ParamsError::NotAnArgsList { found: "a map" })
        ));
        assert!(matches!(
            encode_call(&(), &(1, 2)),
            Err(ParamsError::NotAKwargsMap {
                found: "a sequence"
            })
        ));
        assert!(matches!(
            encode_call(&(), &"x"),
            Err(ParamsError::NotAKwargsMap { found: "a string" })
        ));
    }

    #[test]
    fn custom_serialize_errors_are_reported() {
        struct Failing;
        impl Serialize for Failing {
            fn serialize<S: Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("boom"))
            }
        }
        let error = encode_params(&(1, Failing)).unwrap_err();
        assert!(matches!(&error, ParamsError::Custom(message) if message == "boom"));
        assert_eq!(error.to_string(), "could not serialize the params: boom");
    }

    // --- Decoding ------------------------------------------------------------

    #[test]
    fn decode_call_reads_python_output() {
        let (args, kwargs) =
            decode_call(r#"[[1, "\u00e9"], {"a": {"y": 2, "z": 1}, "b": 2}]"#).unwrap();
        assert_eq!(args, vec![json!(1), json!("é")]);
        assert_eq!(kwargs.get("a"), Some(&json!({"y": 2, "z": 1})));
        assert_eq!(kwargs.get("b"), Some(&json!(2)));

        let (args, _) = decode_call(r#"[[1e-05, 1e+16, -0.0], {}]"#).unwrap();
        assert_eq!(args, vec![json!(1e-5), json!(1e16), json!(-0.0)]);
    }

    #[test]
    fn both_args_and_kwargs_cannot_be_auto_decoded() {
        let text = encode_call(&(1,), &json!({"a": 1, "b": 2})).unwrap();
        let error = decode_params::<Email>(&text).unwrap_err();
        assert!(matches!(
            error,
            ParamsError::BothArgsAndKwargs { args: 1, kwargs: 2 }
        ));
        assert!(error.to_string().contains("decode_call"));
    }

    #[test]
    fn malformed_stored_text_is_rejected() {
        for text in [
            "",
            "not json",
            "{}",
            "[]",
            "[[]]",
            "[[], {}, 1]",
            "[{}, []]",
            "[[], []]",
            "[1, {}]",
            "[[], null]",
            "[[], {}",
            "[[01], {}]",
            "[[\"\\x\"], {}]",
            "[[], {}] x",
        ] {
            assert!(
                matches!(decode_call(text), Err(ParamsError::Malformed { .. })),
                "{text:?} should be malformed"
            );
            assert!(
                matches!(
                    decode_params::<()>(text),
                    Err(ParamsError::Malformed { .. })
                ),
                "{text:?} should be malformed"
            );
        }
        let error = decode_call("[[], []]").unwrap_err();
        assert!(error.to_string().contains("kwargs is an array"), "{error}");
        let error = decode_call("[[1 2], {}]").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("expected ',' or ']' at character 5"),
            "{error}"
        );
    }

    // --- What Python writes and Rust cannot hold exactly -----------------------

    // python3 -c 'import json; print(json.dumps([[2**64, 10**30, -2**63-1], {}]))'
    const WIDE: &str =
        "[[18446744073709551616, 1000000000000000000000000000000, -9223372036854775809], {}]";

    #[test]
    fn wide_integers_decode_exactly_into_128_bit_types() {
        let (a, b, c): (u128, i128, i128) = decode_params(WIDE).unwrap();
        assert_eq!(a, 1 << 64);
        assert_eq!(b, 10i128.pow(30));
        assert_eq!(c, i128::from(i64::MIN) - 1);
        #[derive(Deserialize, Debug, PartialEq)]
        struct Wide {
            n: u128,
            #[serde(default)]
            other: Option<i64>,
        }
        assert_eq!(
            decode_params::<Wide>(r#"[[], {"ignored": [10000000000000000000000000000000000000000], "n": 18446744073709551616}]"#)
                .unwrap(),
            Wide {
                n: 1 << 64,
                other: None
            }
        );
        // Round trip from Rust, for both signs and the extremes.
        for value in [i128::MIN, i128::from(i64::MIN) - 1, i128::MAX] {
            let text = encode_params(&(value,)).unwrap();
            assert_eq!(decode_params::<(i128,)>(&text).unwrap(), (value,));
        }
        let text = encode_params(&(u128::MAX,)).unwrap();
        assert_eq!(text, format!("[[{}], {{}}]", u128::MAX));
        assert_eq!(decode_params::<(u128,)>(&text).unwrap(), (u128::MAX,));
    }

    #[test]
    fn wide_integers_are_refused_where_they_do_not_fit() {
        // serde_json::Value holds 64 bits (without its arbitrary_precision).
        let error = decode_call(WIDE).unwrap_err();
        let ParamsError::WideInteger { value, reason } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(value, "18446744073709551616");
        assert!(reason.contains("out of range"), "{reason}");
        let message = error.to_string();
        assert!(
            message.contains("the integer 18446744073709551616"),
            "{message}"
        );
        assert!(!message.contains("not written by"), "{message}");

        let error = decode_params::<(i64, i64, i64)>(WIDE).unwrap_err();
        assert!(
            matches!(&error, ParamsError::WideInteger { value, .. } if value == "18446744073709551616"),
            "{error:?}"
        );
        // A float field does not silently round a Python int.
        let error = decode_params::<(f64,)>("[[1000000000000000000000000000001], {}]").unwrap_err();
        assert!(
            matches!(error, ParamsError::WideInteger { .. }),
            "{error:?}"
        );

        let huge = format!("[[1{}], {{}}]", "0".repeat(80));
        let error = decode_params::<(u128,)>(&huge).unwrap_err();
        let ParamsError::WideInteger { value, reason } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(
            value,
            "100000000000000000000000...000000000000000000000000 (81 digits)"
        );
        assert!(reason.contains("wider than 128 bits"), "{reason}");
    }

    #[test]
    fn wide_integers_from_json_text_encode_as_python_writes_them() {
        let digits = format!("-1{}", "7".repeat(60));
        let text = format!("[18446744073709551616, {digits}, -0, 1E2, -0.0, 10.50]");
        assert_eq!(
            py(&parse_json(&text).unwrap()),
            format!("[18446744073709551616, {digits}, 0, 100.0, -0.0, 10.5]")
        );
        assert_eq!(
            py(&Smuggled(
                SERDE_JSON_NUMBER,
                "100000000000000000000000000000000000000000"
            )),
            "100000000000000000000000000000000000000000"
        );
        assert_eq!(
            py(&Smuggled(
                "$serde_json::private::RawValue",
                "[18446744073709551616]"
            )),
            "[18446744073709551616]"
        );
    }

    #[test]
    fn lone_surrogates_name_the_problem() {
        // python3 -c 'import json; print(json.dumps([["\ud800", "a\udc00"], {"k": "\udbff!"}]))'
        for (text, escape, position) in [
            (r#"[["\ud800"], {}]"#, r"\ud800", 4),
            (r#"[["a\udc00"], {}]"#, r"\udc00", 5),
            (r#"[[], {"k": "\udbff!"}]"#, r"\udbff", 13),
            (r#"[["\ud800\u0041"], {}]"#, r"\ud800", 4),
        ] {
            let error = decode_call(text).unwrap_err();
            let ParamsError::LoneSurrogate {
                escape: found,
                position: at,
            } = &error
            else {
                panic!("{text}: {error:?}");
            };
            assert_eq!((found.as_str(), *at), (escape, position), "{text}");
            let message = error.to_string();
            assert!(message.contains("lone UTF-16 surrogate"), "{message}");
            assert!(!message.contains("not written by"), "{message}");
            assert!(matches!(
                decode_params::<Vec<String>>(text),
                Err(ParamsError::LoneSurrogate { .. })
            ));
        }
        // A proper pair, in either case of hex digits, is one character.
        let (args, _) = decode_call(r#"[["\ud83d\ude00", "\uD83D\uDE00"], {}]"#).unwrap();
        assert_eq!(args, vec![json!("😀"), json!("😀")]);
    }

    #[test]
    fn python_non_finite_floats_name_the_problem() {
        for (text, token) in [
            ("[[NaN], {}]", "NaN"),
            ("[[], {\"x\": Infinity}]", "Infinity"),
            ("[[-Infinity], {}]", "-Infinity"),
            ("[[1e400], {}]", "1e400"),
        ] {
            let error = decode_call(text).unwrap_err();
            assert!(
                matches!(&error, ParamsError::NonFiniteNumber { token: found, .. } if found == token),
                "{text}: {error:?}"
            );
            assert!(!error.to_string().contains("not written by"), "{error}");
        }
    }

    #[test]
    fn parse_reads_like_python_json_loads() {
        assert_eq!(
            parse_json(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap(),
            Json::Dict(vec![
                ("a".into(), Json::Int("3".into())),
                ("b".into(), Json::Int("2".into()))
            ])
        );
        // What a later duplicate key replaces is no error, as in Python.
        assert_eq!(
            parse_json(r#"{"a": [NaN, "\ud800", 1e400], "a": 1}"#).unwrap(),
            Json::Dict(vec![("a".into(), Json::Int("1".into()))])
        );
        assert!(matches!(
            parse_json(r#"{"a": 1, "a": "x\udc00"}"#),
            Err(ParamsError::LoneSurrogate { position: 17, .. })
        ));
        // A bad key spoils its dict; the first problem is the one named.
        assert!(matches!(
            parse_json(r#"{"\ud800": 1, "\ud800": 2}"#),
            Err(ParamsError::LoneSurrogate { position: 3, .. })
        ));
        assert!(matches!(
            parse_json(r#"[1, -Infinity, "\ud800"]"#),
            Err(ParamsError::NonFiniteNumber { position: 5, .. })
        ));
        // A syntax error wins over a lone surrogate before it.
        assert!(matches!(
            parse_json(r#"["\ud800" 1]"#),
            Err(ParamsError::Malformed { .. })
        ));
        assert_eq!(parse_json(" -0 ").unwrap(), Json::Int("0".into()));
        assert_eq!(parse_json("1e-400").unwrap(), Json::Float(0.0));
        assert_eq!(parse_json(r#""\/\b""#).unwrap(), Json::Str("/\u{8}".into()));
        let long = "9".repeat(PYTHON_MAX_INT_DIGITS + 1);
        assert!(matches!(
            parse_json(&long),
            Err(ParamsError::IntegerTooLong {
                digits: 4301,
                position: 1
            })
        ));
        assert!(parse_json(&long[1..]).is_ok());
        for bad in [
            "",
            "[1,]",
            r#"{"a" 1}"#,
            r#""a\u12""#,
            "\"\t\"",
            "[1] [2]",
            "+1",
            "1.",
            ".5",
            "nul",
        ] {
            assert!(
                matches!(parse_json(bad), Err(ParamsError::Malformed { .. })),
                "{bad:?}"
            );
        }
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_json(&deep(MAX_DEPTH)).is_ok());
        assert!(matches!(
            parse_json(&deep(MAX_DEPTH + 1)),
            Err(ParamsError::TooDeep)
        ));
    }

    #[test]
    fn pretty_keeps_numbers_as_stored() {
        assert_eq!(
            pretty(r#"[[18446744073709551616, 1.5e+30, "\u00e9"], {"a": [], "b": {}}]"#).unwrap(),
            "[\n  [\n    18446744073709551616,\n    1.5e+30,\n    \"é\"\n  ],\n  {\n    \"a\": [],\n    \"b\": {}\n  }\n]"
        );
        assert!(matches!(
            pretty(r#"["\udfff"]"#),
            Err(ParamsError::LoneSurrogate { .. })
        ));
    }

    #[test]
    fn decode_errors_name_the_problem() {
        let error = decode_params::<Email>("[[], {}]").unwrap_err();
        assert!(matches!(error, ParamsError::Decode { .. }));
        assert!(error.to_string().contains("missing field"), "{error}");

        let error = decode_params::<Email>(r#"[[], {"to": 1}]"#).unwrap_err();
        assert!(
            matches!(
                error,
                ParamsError::Decode {
                    context: "keyword arguments",
                    ..
                }
            ),
            "{error}"
        );

        // One argument: the single-value attempt's error is reported.
        let error = decode_params::<i32>(r#"[["x"], {}]"#).unwrap_err();
        assert!(
            matches!(
                error,
                ParamsError::Decode {
                    context: "the single positional argument",
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error.to_string().contains("invalid type: string"),
            "{error}"
        );

        // Several arguments: the array attempt's error is reported.
        let error = decode_params::<(i32, i32)>(r#"[[1, 2, 3], {}]"#).unwrap_err();
        assert!(
            matches!(
                error,
                ParamsError::Decode {
                    context: "positional arguments",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn task_hash_is_lowercase_hex_sha1() {
        // sha1("") and sha1("abc") from any reference implementation.
        assert_eq!(
            task_hash("", ""),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            task_hash("a", "bc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
