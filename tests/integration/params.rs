//! Task params against Python's rules: property tests of the encoder and
//! decoder (generated values compared with Python's `json.dumps(...,
//! sort_keys=True)` and `json.loads`, and round trips), of the CLI's
//! `bgtasks enqueue --args/--kwargs`, and what a runner, `bgtasks show` and
//! the dashboard do with rows that Python wrote and Rust cannot hold exactly
//! (integers wider than 64 bits, lone surrogates, NaN).
//!
//! The property tests run `PROPTEST_CASES` cases (proptest's default, 256,
//! when unset). Python runs as one process per test
//! (`tests/django/json_oracle.py`, in the venv `scripts/install-django.sh`
//! creates), fed one batch of cases per line. Without the venv the tests
//! that compare with Python are skipped with a note, except under `CI=true`,
//! where they fail.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, test as web_test};
use background_tasks::params::{self, ParamsError};
use background_tasks::web::{Access, Dashboard};
use background_tasks::{
    Config, Queue, Registry, Task, TaskContext, TaskError, completed_task, task_row,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::{Map, Value, json};

use crate::cli::bgtasks;
use crate::fixture::{Backend, TestDb};

on_all_backends!(rows_python_wrote_decode_exactly_or_fail_by_name);

// ---- Python -------------------------------------------------------------

/// `tests/django/json_oracle.py` running in the Django venv.
struct Oracle {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Oracle {
    /// `None` (with a note) when the venv is missing outside CI.
    fn start() -> Option<Oracle> {
        let python = crate::django::venv_python("the property test against Python's json")?;
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/django/json_oracle.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start json_oracle.py");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Some(Oracle {
            child,
            input,
            output,
        })
    }

    /// Python's answers for a batch of cases (see json_oracle.py).
    fn ask(&mut self, cases: &[Value]) -> Vec<Answer> {
        writeln!(self.input, "{}", Value::from(cases.to_vec())).unwrap();
        self.input.flush().unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        let answers: Vec<Value> =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("json_oracle.py: {e}: {line:?}"));
        answers.into_iter().map(Answer::from).collect()
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// What Python stores for a call, and what `json.loads` reads back from it.
#[derive(Debug)]
struct Answer {
    text: String,
    hash: String,
    /// `json.loads(text)` in the transport form.
    loaded: Value,
}

impl From<Value> for Answer {
    fn from(answer: Value) -> Self {
        assert!(
            answer.get("error").is_none(),
            "Python refused a generated call: {answer}"
        );
        Answer {
            text: answer["text"].as_str().unwrap().to_owned(),
            hash: answer["hash"].as_str().unwrap().to_owned(),
            loaded: answer["loaded"].clone(),
        }
    }
}

/// Bounded cases (PROPTEST_CASES, default 256); failures are reported, not
/// saved to regression files.
fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

// ---- Python values ------------------------------------------------------

/// A Python value as `json.dumps` meets it. Strings are code points, so
/// they can hold lone surrogates (Python's `str` can, Rust's cannot).
#[derive(Debug, Clone)]
enum Py {
    None,
    Bool(bool),
    /// Decimal digits, any width.
    Int(String),
    Float(f64),
    Str(Vec<u32>),
    List(Vec<Py>),
    /// Keys of one kind (str, int or float) and distinct, as in a Python dict.
    Dict(Vec<(Py, Py)>),
}

impl Py {
    /// The transport form of json_oracle.py.
    fn transport(&self) -> Value {
        match self {
            Py::None => json!(["n"]),
            Py::Bool(b) => json!(["b", b]),
            Py::Int(digits) => json!(["i", digits]),
            Py::Float(f) => json!(["f", f.to_bits().to_string()]),
            Py::Str(points) => json!(["s", points]),
            Py::List(items) => json!(["l", items.iter().map(Py::transport).collect::<Vec<_>>()]),
            Py::Dict(entries) => json!([
                "d",
                entries
                    .iter()
                    .map(|(k, v)| json!([k.transport(), v.transport()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// Whether Rust can hold it: no lone surrogate in any string.
    fn in_rust(&self) -> bool {
        match self {
            Py::Str(points) => points.iter().all(|p| char::from_u32(*p).is_some()),
            Py::List(items) => items.iter().all(Py::in_rust),
            Py::Dict(entries) => entries.iter().all(|(k, v)| k.in_rust() && v.in_rust()),
            _ => true,
        }
    }
}

/// serde_json's wrapper for a number's text (its `arbitrary_precision`
/// protocol), which the encoder reads: the one way to hand it an integer
/// wider than 128 bits.
const SERDE_JSON_NUMBER: &str = "$serde_json::private::Number";

impl Serialize for Py {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Py::None => serializer.serialize_unit(),
            Py::Bool(b) => serializer.serialize_bool(*b),
            Py::Int(digits) => {
                if let Ok(v) = digits.parse::<i128>() {
                    serializer.serialize_i128(v)
                } else if let Ok(v) = digits.parse::<u128>() {
                    serializer.serialize_u128(v)
                } else {
                    let mut number = serializer.serialize_struct(SERDE_JSON_NUMBER, 1)?;
                    number.serialize_field(SERDE_JSON_NUMBER, digits)?;
                    number.end()
                }
            }
            Py::Float(f) => serializer.serialize_f64(*f),
            Py::Str(points) => {
                let text: Option<String> = points.iter().map(|p| char::from_u32(*p)).collect();
                serializer.serialize_str(&text.ok_or_else(|| {
                    serde::ser::Error::custom("a lone surrogate has no Rust form")
                })?)
            }
            Py::List(items) => serializer.collect_seq(items),
            Py::Dict(entries) => serializer.collect_map(entries.iter().map(|(k, v)| (k, v))),
        }
    }
}

fn int_digits() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => any::<i64>().prop_map(|v| v.to_string()),
        2 => any::<i128>().prop_map(|v| v.to_string()),
        1 => any::<u128>().prop_map(|v| v.to_string()),
        1 => "-?[1-9][0-9]{0,59}",
        1 => prop_oneof![
            Just("18446744073709551616".to_owned()),
            Just("1000000000000000000000000000000".to_owned()),
            Just("-9223372036854775809".to_owned()),
        ],
    ]
}

fn finite_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |f| f.is_finite()),
        2 => (-100_000i32..100_000, 0i32..8).prop_map(|(m, e)| f64::from(m) / 10f64.powi(e)),
        1 => prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1e16),
            Just(1e-5),
            Just(982_075_422_482_557.2),
            Just(f64::MAX),
            Just(5e-324),
        ],
    ]
}

/// Code points of a string; with `surrogates`, one string in 20 may hold
/// lone ones.
fn code_points(surrogates: bool) -> BoxedStrategy<Vec<u32>> {
    let ranges = |surrogate_weight| {
        let mut ranges = vec![
            (40, (0x20u32..0x7f).boxed()),
            (8, (0u32..0x20).boxed()),
            (8, (0x80u32..0xd800).boxed()),
            (8, (0xe000u32..0x1_0000).boxed()),
            (8, (0x1_0000u32..0x11_0000).boxed()),
        ];
        if surrogate_weight > 0 {
            ranges.push((surrogate_weight, (0xd800u32..0xe000).boxed()));
        }
        prop::collection::vec(prop::strategy::Union::new_weighted(ranges), 0..8).boxed()
    };
    if surrogates {
        prop_oneof![19 => ranges(0), 1 => ranges(20)].boxed()
    } else {
        ranges(0)
    }
}

fn dict_of(key: BoxedStrategy<Py>, value: BoxedStrategy<Py>) -> impl Strategy<Value = Py> {
    prop::collection::vec((key, value), 0..6).prop_map(|entries| {
        // Distinct keys, as Python's dict has them (0.0 == -0.0 there).
        let mut distinct: Vec<(Py, Py)> = Vec::new();
        for (key, value) in entries {
            let same = |other: &Py| match (&key, other) {
                (Py::Str(a), Py::Str(b)) => a == b,
                (Py::Int(a), Py::Int(b)) => a == b,
                (Py::Float(a), Py::Float(b)) => a == b,
                _ => false,
            };
            if !distinct.iter().any(|(k, _)| same(k)) {
                distinct.push((key, value));
            }
        }
        Py::Dict(distinct)
    })
}

/// Values of any shape; `surrogates` as in [`code_points`]; `float_keys`
/// allows dicts keyed by floats.
fn py_value(surrogates: bool, float_keys: bool) -> BoxedStrategy<Py> {
    let leaf = prop_oneof![
        Just(Py::None),
        any::<bool>().prop_map(Py::Bool),
        int_digits().prop_map(Py::Int),
        finite_float().prop_map(Py::Float),
        code_points(surrogates).prop_map(Py::Str),
    ];
    leaf.prop_recursive(3, 40, 6, move |inner| {
        let str_key = code_points(surrogates).prop_map(Py::Str).boxed();
        let int_key = any::<i64>().prop_map(|i| Py::Int(i.to_string())).boxed();
        let float_key = finite_float().prop_map(Py::Float).boxed();
        let mut shapes = vec![
            (
                2,
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(Py::List)
                    .boxed(),
            ),
            (2, dict_of(str_key, inner.clone()).boxed()),
            (1, dict_of(int_key, inner.clone()).boxed()),
        ];
        if float_keys {
            shapes.push((1, dict_of(float_key, inner).boxed()));
        }
        prop::strategy::Union::new_weighted(shapes)
    })
    .boxed()
}

/// A call: only args, only kwargs (so the automatic layout can decode it),
/// or both.
fn py_call(surrogates: bool, float_keys: bool) -> impl Strategy<Value = (Vec<Py>, Vec<(Py, Py)>)> {
    let value = py_value(surrogates, float_keys);
    let args = prop::collection::vec(value.clone(), 0..5);
    let kwargs = dict_of(code_points(surrogates).prop_map(Py::Str).boxed(), value)
        .prop_map(|dict| match dict {
            Py::Dict(entries) => entries,
            _ => Vec::new(),
        })
        .boxed();
    prop_oneof![
        (args.clone(), Just(Vec::new())),
        (Just(Vec::new()), kwargs.clone()),
        (args, kwargs),
    ]
}

// ---- Decoded values, in the transport form ------------------------------

/// Any decoded value, in json_oracle.py's transport form: what a params type
/// that accepts everything (integers up to 128 bits included) receives.
struct Transported(Value);

impl<'de> Deserialize<'de> for Transported {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(TransportVisitor)
            .map(Transported)
    }
}

struct TransportVisitor;

fn code_points_of(s: &str) -> Value {
    json!(["s", s.chars().map(u32::from).collect::<Vec<_>>()])
}

impl<'de> Visitor<'de> for TransportVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(json!(["n"]))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(json!(["b", v]))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(json!(["i", v.to_string()]))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(json!(["i", v.to_string()]))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(json!(["i", v.to_string()]))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(json!(["i", v.to_string()]))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(json!(["f", v.to_bits().to_string()]))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(code_points_of(v))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Transported(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(json!(["l", items]))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, Transported(value))) = map.next_entry::<String, Transported>()? {
            entries.push(json!([code_points_of(&key), value]));
        }
        Ok(json!(["d", entries]))
    }
}

/// A `serde_json::Value` in the transport form.
fn transport_of(value: &Value) -> Value {
    match value {
        Value::Null => json!(["n"]),
        Value::Bool(b) => json!(["b", b]),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => json!(["i", u.to_string()]),
            (_, Some(i)) => json!(["i", i.to_string()]),
            _ => json!(["f", n.as_f64().unwrap().to_bits().to_string()]),
        },
        Value::String(s) => code_points_of(s),
        Value::Array(items) => json!(["l", items.iter().map(transport_of).collect::<Vec<_>>()]),
        Value::Object(map) => json!([
            "d",
            map.iter()
                .map(|(k, v)| json!([code_points_of(k), transport_of(v)]))
                .collect::<Vec<_>>()
        ]),
    }
}

/// Dict entries sorted by key, at every level: `serde_json::Map` does not
/// keep the stored order.
fn sorted(t: &Value) -> Value {
    match t[0].as_str() {
        Some("l") => json!([
            "l",
            t[1].as_array()
                .unwrap()
                .iter()
                .map(sorted)
                .collect::<Vec<_>>()
        ]),
        Some("d") => {
            let mut entries: Vec<Value> = t[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| json!([e[0], sorted(&e[1])]))
                .collect();
            entries.sort_by_key(|e| e[0].to_string());
            json!(["d", entries])
        }
        _ => t.clone(),
    }
}

/// Whether any node of a transported value satisfies `found`.
fn any_node(t: &Value, found: &dyn Fn(&str, &Value) -> bool) -> bool {
    let tag = t[0].as_str().unwrap_or_default();
    found(tag, &t[1])
        || match tag {
            "l" => t[1].as_array().unwrap().iter().any(|i| any_node(i, found)),
            "d" => t[1]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| any_node(&e[0], found) || any_node(&e[1], found)),
            _ => false,
        }
}

fn has_lone_surrogate(t: &Value) -> bool {
    any_node(t, &|tag, payload| {
        tag == "s"
            && payload
                .as_array()
                .unwrap()
                .iter()
                .any(|p| (0xd800..0xe000).contains(&p.as_u64().unwrap()))
    })
}

fn has_non_finite_float(t: &Value) -> bool {
    any_node(t, &|tag, payload| {
        tag == "f" && !f64::from_bits(payload.as_str().unwrap().parse().unwrap()).is_finite()
    })
}

/// Whether an integer does not fit `fits`.
fn has_int_outside(t: &Value, fits: fn(&str) -> bool) -> bool {
    any_node(t, &|tag, payload| {
        tag == "i" && !fits(payload.as_str().unwrap())
    })
}

fn fits_64(digits: &str) -> bool {
    digits.parse::<i64>().is_ok() || digits.parse::<u64>().is_ok()
}

fn fits_128(digits: &str) -> bool {
    digits.parse::<i128>().is_ok() || digits.parse::<u128>().is_ok()
}

fn kind(error: &ParamsError) -> &'static str {
    match error {
        ParamsError::LoneSurrogate { .. } => "LoneSurrogate",
        ParamsError::WideInteger { .. } => "WideInteger",
        ParamsError::NonFiniteNumber { .. } => "NonFiniteNumber",
        _ => "other",
    }
}

/// What decoding Python's text must give: Python's own reading, or the
/// error that names what Rust cannot hold.
fn check_decode(text: &str, loaded: &Value) -> Result<(), TestCaseError> {
    let lone = has_lone_surrogate(loaded);
    let wide_64 = has_int_outside(loaded, fits_64);
    let wide_128 = has_int_outside(loaded, fits_128);
    let (args, kwargs) = (&loaded[1][0], &loaded[1][1]);

    match params::decode_call(text) {
        Ok((a, k)) => {
            prop_assert!(!lone && !wide_64, "decode_call accepted {text}");
            let got = json!([
                "l",
                [
                    transport_of(&Value::Array(a)),
                    transport_of(&Value::Object(k))
                ]
            ]);
            prop_assert_eq!(sorted(&got), sorted(loaded), "{}", text);
        }
        Err(error) => {
            let expected = if lone { "LoneSurrogate" } else { "WideInteger" };
            prop_assert!(lone || wide_64, "decode_call refused {text}: {error}");
            prop_assert_eq!(kind(&error), expected, "{}: {}", text, error);
            prop_assert!(!error.to_string().contains("not written by"), "{}", error);
        }
    }

    // A params type that takes any value, through the automatic layout.
    let arity = (
        args[1].as_array().unwrap().len(),
        kwargs[1].as_array().unwrap().len(),
    );
    let expected = match arity {
        (0, 0) => json!(["n"]),
        (_, 0) => args.clone(),
        (0, _) => kwargs.clone(),
        _ => return Ok(()),
    };
    match params::decode_params::<Transported>(text) {
        Ok(Transported(got)) => {
            prop_assert!(!lone && !wide_128, "decode_params accepted {text}");
            prop_assert_eq!(sorted(&got), sorted(&expected), "{}", text);
        }
        Err(error) => {
            let expected = if lone { "LoneSurrogate" } else { "WideInteger" };
            prop_assert!(lone || wide_128, "decode_params refused {text}: {error}");
            prop_assert_eq!(kind(&error), expected, "{}: {}", text, error);
        }
    }
    Ok(())
}

fn call_transport(args: &[Py], kwargs: &[(Py, Py)]) -> (Value, Value) {
    (
        Py::List(args.to_vec()).transport(),
        Py::Dict(kwargs.to_vec()).transport(),
    )
}

const NAME: &str = "params.prop";

/// Generated calls, encoded by Python and by this crate: the same text and
/// hash whenever Rust can hold the values; and Python's text decodes to what
/// `json.loads` reads, or fails naming a lone surrogate or an integer the
/// target cannot hold.
#[test]
fn params_match_python_json_dumps_and_loads() {
    let Some(oracle) = Oracle::start() else {
        return;
    };
    let oracle = RefCell::new(oracle);
    let cases = AtomicUsize::new(0);
    let (calls_seen, wide_seen, lone_seen) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let batch = prop::collection::vec(py_call(true, true), 1..8);
    runner()
        .run(&batch, |calls| {
            cases.fetch_add(1, Ordering::Relaxed);
            let asked: Vec<Value> = calls
                .iter()
                .map(|(args, kwargs)| {
                    let (a, k) = call_transport(args, kwargs);
                    json!({"name": NAME, "args": a, "kwargs": k, "form": "value"})
                })
                .collect();
            let answers = oracle.borrow_mut().ask(&asked);
            for ((args, kwargs), answer) in calls.iter().zip(&answers) {
                calls_seen.fetch_add(1, Ordering::Relaxed);
                if has_int_outside(&answer.loaded, fits_64) {
                    wide_seen.fetch_add(1, Ordering::Relaxed);
                }
                if has_lone_surrogate(&answer.loaded) {
                    lone_seen.fetch_add(1, Ordering::Relaxed);
                }
                if args.iter().all(Py::in_rust)
                    && kwargs.iter().all(|(k, v)| k.in_rust() && v.in_rust())
                {
                    let kwargs_map = Py::Dict(kwargs.clone());
                    let text = params::encode_call(args, &kwargs_map)
                        .map_err(|e| TestCaseError::fail(format!("{e}: {args:?} {kwargs:?}")))?;
                    prop_assert_eq!(&text, &answer.text);
                    prop_assert_eq!(params::task_hash(NAME, &text), answer.hash.clone());
                }
                check_decode(&answer.text, &answer.loaded)?;
            }
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!(
        "params_match_python_json_dumps_and_loads: {} generated batches, {} calls \
         ({} with integers wider than 64 bits, {} with lone surrogates)",
        cases.into_inner(),
        calls_seen.into_inner(),
        wide_seen.into_inner(),
        lone_seen.into_inner()
    );
}

/// Encode then decode gives back the values, integers of every width
/// included (up to 128 bits into the params type; wider ones are refused by
/// name), without Python.
#[test]
fn params_round_trip() {
    let cases = AtomicUsize::new(0);
    runner()
        .run(&py_call(false, false), |(args, kwargs)| {
            cases.fetch_add(1, Ordering::Relaxed);
            let kwargs = Py::Dict(kwargs);
            let text = params::encode_call(&args, &kwargs)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // What Python's json.loads gives back: dict keys become strings.
            let expected = json!(["l", [Py::List(args).transport(), kwargs.transport()]]);
            let expected = stringify_keys(&expected);
            check_decode(&text, &expected)
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!("params_round_trip: {} generated cases", cases.into_inner());
}

/// Int dict keys as the strings JSON stores them.
fn stringify_keys(t: &Value) -> Value {
    match t[0].as_str() {
        Some("l") => json!([
            "l",
            t[1].as_array()
                .unwrap()
                .iter()
                .map(stringify_keys)
                .collect::<Vec<_>>()
        ]),
        Some("d") => json!([
            "d",
            t[1].as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let key = match e[0][0].as_str() {
                        Some("i") => code_points_of(e[0][1].as_str().unwrap()),
                        _ => e[0].clone(),
                    };
                    json!([key, stringify_keys(&e[1])])
                })
                .collect::<Vec<_>>()
        ]),
        _ => t.clone(),
    }
}

// ---- The CLI's JSON arguments -----------------------------------------------

/// JSON whitespace, sometimes none.
fn ws() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(""), Just(" "), Just("\n  "), Just("\t")]
}

fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "-?(0|[1-9][0-9]{0,40})",
        2 => "-?(0|[1-9][0-9]{0,5})\\.[0-9]{1,6}",
        2 => "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,4})?[eE][+-]?[0-9]{1,2}",
        // May overflow to infinity (1e400) or underflow to zero.
        1 => "-?[1-9](\\.[0-9]{1,4})?[eE][+-]?[0-9]{3}",
        1 => prop_oneof![
            Just("18446744073709551616".to_owned()),
            Just("-9223372036854775809".to_owned()),
            Just("1000000000000000000000000000000".to_owned()),
        ],
    ]
}

/// One character of a JSON string, written in one of the ways JSON allows.
fn string_piece() -> impl Strategy<Value = String> {
    let plain = any::<char>()
        .prop_filter("needs an escape", |c| !matches!(c, '"' | '\\') && *c >= ' ')
        .prop_map(String::from);
    let short = prop_oneof![
        Just("\\\""),
        Just("\\\\"),
        Just("\\/"),
        Just("\\b"),
        Just("\\f"),
        Just("\\n"),
        Just("\\r"),
        Just("\\t"),
    ]
    .prop_map(str::to_owned);
    let escaped = (any::<char>(), any::<bool>()).prop_map(|(c, upper)| {
        let mut units = [0u16; 2];
        c.encode_utf16(&mut units)
            .iter()
            .map(|u| {
                if upper {
                    format!("\\u{u:04X}")
                } else {
                    format!("\\u{u:04x}")
                }
            })
            .collect()
    });
    let lone = (0xd800u32..0xe000).prop_map(|u| format!("\\u{u:04x}"));
    prop_oneof![40 => plain, 8 => short, 12 => escaped, 1 => lone]
}

fn string_text() -> impl Strategy<Value = String> {
    prop::collection::vec(string_piece(), 0..6)
        .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

/// Keys from a small pool (so some repeat, `"a"` also as `"\u0061"`) or
/// any string.
fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"a\"".to_owned()),
        Just("\"\\u0061\"".to_owned()),
        Just("\"b\"".to_owned()),
        string_text(),
    ]
}

fn list_text(item: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (prop::collection::vec(item, 0..5), ws(), ws())
        .prop_map(|(items, a, b)| format!("[{a}{}{b}]", items.join(&format!("{b},{a}"))))
}

fn dict_text(value: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (prop::collection::vec((key_text(), value), 0..5), ws(), ws()).prop_map(|(entries, a, b)| {
        let entries: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("{k}{a}:{b}{v}"))
            .collect();
        format!("{{{b}{}{a}}}", entries.join(&format!("{a},{b}")))
    })
}

fn json_text() -> BoxedStrategy<String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number_text(),
        string_text(),
    ]
    .prop_recursive(3, 30, 5, |inner| {
        prop_oneof![list_text(inner.clone()), dict_text(inner)]
    })
    .boxed()
}

/// `bgtasks enqueue --args/--kwargs` with generated JSON texts stores what
/// Django stores for `json.loads` of them (same text, same hash), or, where
/// Python would read something Rust cannot store exactly (a lone surrogate,
/// an infinite float), exits 2 naming it and writes nothing.
#[test]
fn cli_json_arguments_store_what_python_stores() {
    let Some(oracle) = Oracle::start() else {
        return;
    };
    let oracle = RefCell::new(oracle);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(crate::fixture::fresh(Backend::Sqlite)).unwrap();
    let rows = || rt.block_on(task_row::Entity::find().count(&t.db)).unwrap();
    let cases = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let texts = (list_text(json_text()), dict_text(json_text()));
    runner()
        .run(&texts, |(args, kwargs)| {
            cases.fetch_add(1, Ordering::Relaxed);
            let answer = oracle.borrow_mut().ask(&[json!({
                "name": "prop.cli", "args": args, "kwargs": kwargs, "form": "text"
            })]);
            let answer = &answer[0];
            let before = rows();
            let output = bgtasks(&t)
                .args(["--json", "enqueue", "prop.cli", "--allow-unknown"])
                .arg(format!("--args={args}"))
                .arg(format!("--kwargs={kwargs}"))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let lone = has_lone_surrogate(&answer.loaded);
            let infinite = has_non_finite_float(&answer.loaded);
            if lone || infinite {
                refused.fetch_add(1, Ordering::Relaxed);
                prop_assert_eq!(output.status.code(), Some(2), "{}", stderr);
                prop_assert!(
                    (lone && stderr.contains("lone UTF-16 surrogate"))
                        || (infinite && stderr.contains("not a finite float")),
                    "{}",
                    stderr
                );
                prop_assert_eq!(rows(), before, "a refused enqueue writes nothing");
            } else {
                prop_assert!(output.status.success(), "{}", stderr);
                let out: Value = serde_json::from_slice(&output.stdout).unwrap();
                prop_assert_eq!(&out["task"]["task_params"], &json!(answer.text));
                prop_assert_eq!(&out["task"]["task_hash"], &json!(answer.hash));
            }
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!(
        "cli_json_arguments_store_what_python_stores: {} generated cases, {} refused",
        cases.into_inner(),
        refused.into_inner()
    );
}

// ---- Rows Python wrote ----------------------------------------------------

// Python 3.11:
//   json.dumps([[2**64, 10**30, -2**63-1], {}], sort_keys=True)
const WIDE: &str =
    "[[18446744073709551616, 1000000000000000000000000000000, -9223372036854775809], {}]";
//   json.dumps([["\ud800"], {"k": "\udfff"}], sort_keys=True)
const LONE: &str = r#"[["\ud800"], {"k": "\udfff"}]"#;
//   json.dumps([[float("nan")], {}], sort_keys=True)
const NAN: &str = "[[NaN], {}]";

/// Records the wide integers it gets, exactly.
#[derive(Clone, Default)]
struct Wide {
    got: Arc<Mutex<Vec<(u128, i128, i128)>>>,
}

impl Task for Wide {
    type Params = (u128, i128, i128);
    type Output = ();
    fn name() -> &'static str {
        "params.wide"
    }
    async fn run(&self, params: Self::Params, _: TaskContext) -> Result<(), TaskError> {
        self.got.lock().unwrap().push(params);
        Ok(())
    }
}

/// Takes any call as `serde_json::Value`s, which hold 64-bit integers.
#[derive(Clone, Default)]
struct Loose;

impl Task for Loose {
    type Params = (Vec<Value>, Map<String, Value>);
    type Output = ();
    fn name() -> &'static str {
        "params.loose"
    }
    fn encode(params: &Self::Params) -> Result<String, ParamsError> {
        params::encode_call(&params.0, &params.1)
    }
    fn decode(task_params: &str) -> Result<Self::Params, ParamsError> {
        params::decode_call(task_params)
    }
    async fn run(&self, _: Self::Params, _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A waiting row of `name` holding `task_params` exactly as given, as if
/// Python had written it.
async fn python_row(queue: &Queue, t: &TestDb, name: &str, task_params: &str) -> i32 {
    let row = queue
        .enqueue_call(name, &(), &())
        .schedule(-5)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    task_row::Entity::update_many()
        .col_expr(task_row::Column::TaskParams, Expr::value(task_params))
        .col_expr(
            task_row::Column::TaskHash,
            Expr::value(params::task_hash(name, task_params)),
        )
        .filter(task_row::Column::Id.eq(row.id))
        .exec(&t.db)
        .await
        .unwrap();
    row.id
}

fn show(t: &TestDb, args: &[&str]) -> String {
    let output = bgtasks(t).arg("show").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "show {args:?}: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Rows as Python writes them: wide integers reach an i128/u128 params type
/// exactly; a `serde_json::Value` params type, a lone surrogate and NaN fail
/// the task permanently with an error naming the value (never "written by
/// someone else"); `bgtasks show` and the dashboard show them without
/// changing a digit. And `bgtasks enqueue` stores wide integers as Python
/// does.
async fn rows_python_wrote_decode_exactly_or_fail_by_name(t: TestDb) -> TestDb {
    let registry = Registry::new();
    let wide = Wide::default();
    registry.register(wide.clone()).register(Loose);
    let queue = t.queue(registry, Config::default());
    let exact = python_row(&queue, &t, "params.wide", WIDE).await;
    let wide_as_value = python_row(&queue, &t, "params.loose", WIDE).await;
    let lone = python_row(&queue, &t, "params.loose", LONE).await;
    let nan = python_row(&queue, &t, "params.loose", NAN).await;

    let shown = show(&t, &[&exact.to_string()]);
    assert!(
        shown.contains("    18446744073709551616,\n    1000000000000000000000000000000,\n    -9223372036854775809\n"),
        "{shown}"
    );
    let shown = show(&t, &[&lone.to_string()]);
    assert!(shown.contains(LONE), "shown as stored: {shown}");
    assert!(
        shown.contains(r"the lone UTF-16 surrogate \ud800 at character 4"),
        "{shown}"
    );
    let dashboard = web_test::init_service(
        App::new().service(
            Dashboard::new(queue.clone())
                .authorize(|_| Access::Full)
                .scope("/dash"),
        ),
    )
    .await;
    for (id, stored) in [
        (exact, WIDE),
        (wide_as_value, WIDE),
        (lone, LONE),
        (nan, NAN),
    ] {
        let page = web_test::call_service(
            &dashboard,
            web_test::TestRequest::get()
                .uri(&format!("/dash/tasks/{id}"))
                .to_request(),
        )
        .await;
        assert_eq!(page.status(), 200, "the dashboard's page of task {id}");
        let api: Value = web_test::call_and_read_body_json(
            &dashboard,
            web_test::TestRequest::get()
                .uri(&format!("/dash/api/tasks/{id}"))
                .to_request(),
        )
        .await;
        let api = api.to_string();
        assert!(
            api.contains(&Value::from(stored).to_string()),
            "the JSON API gives task_params as stored: {api}"
        );
    }

    let mut ran = 0;
    while queue.run_next_task().await {
        ran += 1;
    }
    assert_eq!(ran, 4);
    assert_eq!(
        *wide.got.lock().unwrap(),
        vec![(1u128 << 64, 10i128.pow(30), i128::from(i64::MIN) - 1)],
        "Python's 2**64, 10**30 and -2**63-1, exactly"
    );
    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    let failed = |params: &str, name: &str| {
        history
            .iter()
            .find(|h| h.task_params == params && h.task_name == name)
            .unwrap_or_else(|| panic!("no history row of {name} {params}: {history:?}"))
    };
    for (row, says) in [
        (
            failed(WIDE, "params.loose"),
            "the integer 18446744073709551616 cannot be decoded exactly",
        ),
        (
            failed(LONE, "params.loose"),
            r"the lone UTF-16 surrogate \ud800 at character 4",
        ),
        (failed(NAN, "params.loose"), "the number NaN at character 3"),
    ] {
        assert!(row.failed_at.is_some(), "{row:?}");
        assert_eq!(row.attempts, 1, "permanent: the same text never decodes");
        assert!(row.last_error.contains(says), "{}", row.last_error);
        assert!(
            row.last_error.contains("cannot be decoded") && !row.last_error.contains("written by"),
            "{}",
            row.last_error
        );
    }
    assert!(failed(WIDE, "params.wide").failed_at.is_none());
    let done = failed(LONE, "params.loose").id.to_string();
    let shown = show(&t, &["--history", &done]);
    assert!(
        shown.contains(r"the lone UTF-16 surrogate \ud800"),
        "{shown}"
    );

    // The CLI stores wide integers as Python does: same text, same hash.
    let output = bgtasks(&t)
        .args([
            "--json",
            "enqueue",
            "params.wide",
            "--allow-unknown",
            "--args",
        ])
        .arg("[18446744073709551616, 1000000000000000000000000000000, -9223372036854775809]")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(out["task"]["task_params"], WIDE);
    assert_eq!(
        out["task"]["task_hash"],
        params::task_hash("params.wide", WIDE)
    );
    // And so does Rust, from the typed params.
    let typed = queue
        .enqueue::<Wide>(&(1u128 << 64, 10i128.pow(30), i128::from(i64::MIN) - 1))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(typed.task_params, WIDE);

    // A lone surrogate or NaN from the command line: exit 2, nothing written.
    let before = task_row::Entity::find().count(&t.db).await.unwrap();
    for (args, says) in [
        (
            r#"["\ud800"]"#,
            r"lone UTF-16 surrogate \ud800 at character 3",
        ),
        ("[NaN]", "the number NaN at character 2"),
        ("[-1e400]", "the number -1e400 at character 2"),
    ] {
        let output = bgtasks(&t)
            .args(["enqueue", "params.loose", "--allow-unknown", "--args", args])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args}: {stderr}");
        assert!(stderr.contains(says), "{args}: {stderr}");
    }
    assert_eq!(
        task_row::Entity::find().count(&t.db).await.unwrap(),
        before,
        "refused enqueues write nothing"
    );
    t
}
