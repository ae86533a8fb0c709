//! The edits as they are stored (edit log, learning state): plain data, serde only, with the
//! check that an edit read from a file fits the model. No model code here: the fuzz crate
//! compiles this file (and `request.rs`) directly to fuzz the edit log's decoding.

use serde::{Deserialize, Serialize};

use crate::request::EditRequest;

/// The gated memory's default cosine for the subject opening a text
/// ([`GateConfig::opening_threshold`](crate::gate::GateConfig::opening_threshold)); entries
/// written before the field existed read it.
pub const DEFAULT_OPENING_THRESHOLD: f32 = 0.98;

/// Which algorithm made an edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Rank-one model editing at one layer (Meng et al. 2022).
    Rome,
    /// Mass editing spread over a layer range (Meng et al. 2023).
    Memit,
    /// MEMIT with updates projected on the null space of preserved keys (Fang et al. 2025).
    AlphaEdit,
    /// A codebook at one layer with a deferral radius (Hartvigsen et al. 2023).
    Grace,
    /// The gated side memory ([`crate::gate`]): a subject gate at an early layer, a relation
    /// gate at a late one, a value added where both fire. engram's default.
    Gated,
    /// Closed-form lifelong editing with running normalization of keys and value gradients
    /// (Gu et al. 2025, [`crate::ultraedit`]).
    #[serde(rename = "ultraedit")]
    UltraEdit,
}

impl Method {
    /// The CLI name (`rome`, `memit`, `alphaedit`, `grace`, `gated`, `ultraedit`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Gated => "gated",
            Method::Rome => "rome",
            Method::Memit => "memit",
            Method::AlphaEdit => "alphaedit",
            Method::Grace => "grace",
            Method::UltraEdit => "ultraedit",
        }
    }
}

/// One rank-one term on the down-projection of `layer`: output += `(x · a) r`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankOne {
    /// The block.
    pub layer: usize,
    /// Output direction, `d_model` values.
    pub r: Vec<f32>,
    /// Key direction, `d_ff` values.
    pub a: Vec<f32>,
    /// The key this term was written for, `d_ff` values (AlphaEdit protects it afterwards).
    pub k: Vec<f32>,
    /// UltraEdit only: the loss gradient at the layer's output where `k` was read, `d_model`
    /// values (its running normalization is recomputed from the `k` and `g` of the edits
    /// applied, so undo takes a row out of the statistics too). Empty for other methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub g: Vec<f32>,
}

/// A GRACE codebook entry: where the down-projection input at the last position is within
/// `radius` of `key`, its output is replaced by `value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraceEntry {
    /// The block.
    pub layer: usize,
    /// The MLP key of the edited prompt's last token, `d_ff` values.
    pub key: Vec<f32>,
    /// The down-projection output to substitute, `d_model` values.
    pub value: Vec<f32>,
    /// Deferral radius (Euclidean).
    pub radius: f32,
}

/// What an edit changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EditDelta {
    /// Rank-one weight terms.
    Weights(Vec<RankOne>),
    /// A side-memory entry.
    Grace(GraceEntry),
    /// A gated side-memory entry.
    Gate(GateEntry),
}

/// One applied edit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// Unique within its [`EditSet`](crate::store::EditSet), increasing in application order.
    pub id: u64,
    /// The algorithm.
    pub method: Method,
    /// The fact.
    pub request: EditRequest,
    /// The change.
    pub delta: EditDelta,
    /// Wall time it took to make, in seconds (a batch's time shared equally; 0 in logs of
    /// version 3 and older, which did not record it).
    #[serde(default)]
    pub seconds: f64,
}

impl Edit {
    /// Checks the edit's vectors and layers against a model of `n_layer` blocks, width
    /// `d_model` and MLP width `d_ff` (an edit read from a file may come from another model or
    /// be crafted: a wrong length would index past the model's activations). The error names
    /// the edit and the field.
    pub fn check_shape(&self, n_layer: usize, d_model: usize, d_ff: usize) -> Result<(), String> {
        let id = self.id;
        let layer = |field: &str, l: usize| match l < n_layer {
            true => Ok(()),
            false => Err(format!(
                "edit {id}: `{field}` {l} is outside the model's {n_layer} blocks"
            )),
        };
        let len = |field: &str, v: &[f32], want: usize| {
            if v.len() != want {
                return Err(format!(
                    "edit {id}: `{field}` has {} values, the model needs {want}",
                    v.len()
                ));
            }
            match v.iter().all(|x| x.is_finite()) {
                true => Ok(()),
                false => Err(format!("edit {id}: `{field}` holds non-finite values")),
            }
        };
        match &self.delta {
            EditDelta::Weights(terms) => {
                for t in terms {
                    layer("layer", t.layer)?;
                    len("r", &t.r, d_model)?;
                    len("a", &t.a, d_ff)?;
                    len("k", &t.k, d_ff)?;
                    if !t.g.is_empty() {
                        len("g", &t.g, d_model)?;
                    }
                }
            }
            EditDelta::Grace(g) => {
                layer("layer", g.layer)?;
                len("key", &g.key, d_ff)?;
                len("value", &g.value, d_model)?;
            }
            EditDelta::Gate(g) => {
                layer("subject_layer", g.subject_layer)?;
                layer("relation_layer", g.relation_layer)?;
                if g.subject_keys.is_empty() {
                    return Err(format!("edit {id}: `subject_keys` is empty"));
                }
                for k in &g.subject_keys {
                    len("subject_keys", k, d_ff)?;
                }
                if !g.subject_thresholds.is_empty()
                    && g.subject_thresholds.len() != g.subject_keys.len()
                {
                    return Err(format!(
                        "edit {id}: {} `subject_thresholds` for {} `subject_keys`",
                        g.subject_thresholds.len(),
                        g.subject_keys.len()
                    ));
                }
                if g.subject_thresholds.iter().any(|t| !t.is_finite()) {
                    return Err(format!("edit {id}: `subject_thresholds` is not finite"));
                }
                if g.subject_prev_keys.len() > g.subject_keys.len() {
                    return Err(format!(
                        "edit {id}: {} `subject_prev_keys` for {} `subject_keys`",
                        g.subject_prev_keys.len(),
                        g.subject_keys.len()
                    ));
                }
                for k in g.subject_prev_keys.iter().filter(|k| !k.is_empty()) {
                    len("subject_prev_keys", k, d_ff)?;
                }
                len("relation_key", &g.relation_key, d_ff)?;
                for k in &g.relation_keys {
                    len("relation_keys", k, d_ff)?;
                }
                layer("relation_word_layer", g.relation_word_layer)?;
                for k in &g.relation_words {
                    len("relation_words", k, d_ff)?;
                }
                for k in &g.contrast_keys {
                    len("contrast_keys", k, d_ff)?;
                }
                for (field, v) in [
                    ("contrast_floor", g.contrast_floor.unwrap_or(0.0)),
                    ("contrast_margin", g.contrast_margin),
                ] {
                    if !v.is_finite() {
                        return Err(format!("edit {id}: `{field}` is not finite"));
                    }
                }
                len("value", &g.value, d_model)?;
            }
        }
        Ok(())
    }
}

/// One gated memory entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateEntry {
    /// The subject gate's layer.
    pub subject_layer: usize,
    /// Unit subject keys at `subject_layer`, `d_ff` values each: the subject opening a text
    /// first, then (when there is one) the subject after a space.
    pub subject_keys: Vec<Vec<f32>>,
    /// For a subject of two or more tokens, the unit key of the token before its last, one per
    /// entry of `subject_keys` (empty where that tokenization is a single token): a position
    /// then matches only if the one before it matches this key too, so " Islands" after
    /// "Cayman" does not fire an entry for "Faroe Islands". Absent from logs written before it
    /// (the gate then reads the last token alone).
    #[serde(default)]
    pub subject_prev_keys: Vec<Vec<f32>>,
    /// Cosine needed with a subject key after the first.
    pub subject_threshold: f32,
    /// Per subject key, the cosine it needs, where it differs from the rule above (empty: that
    /// rule): a key of one phrasing's frame ("In {S}, ...") reproduces exactly where a text
    /// repeats the frame, so it gets the opening key's threshold (at 0.75, "In Peru" matched
    /// "In Ecuador" and a Peru edit answered for Ecuador). Absent from older logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_thresholds: Vec<f32>,
    /// Cosine needed with the first subject key (the subject opening a text).
    #[serde(default = "default_opening")]
    pub opening_threshold: f32,
    /// The relation gate's layer, where `value` is added.
    pub relation_layer: usize,
    /// Unit relation key at `relation_layer`, `d_ff` values.
    pub relation_key: Vec<f32>,
    /// Further unit relation keys, one per phrasing the value was trained on besides the
    /// prompt (the gate fires on the closest of all); absent from logs written before them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relation_keys: Vec<Vec<f32>>,
    /// Cosine needed with `relation_key` (or one of `relation_keys`).
    pub relation_threshold: f32,
    /// Unit keys at `subject_layer` of the prompt's relation word ("continent"): a position
    /// matching one (at the subject threshold) marks the sequence as naming the relation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relation_words: Vec<Vec<f32>>,
    /// The layer of `relation_words`.
    #[serde(default)]
    pub relation_word_layer: usize,
    /// The relation cosine that suffices where a relation word was named within the window
    /// (`None`: `relation_threshold` everywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_word_threshold: Option<f32>,
    /// Unit keys at `relation_layer` of generic phrasings of *other* relations of the subject
    /// ([`crate::phrasing::CONTRAST`]), `d_ff` values each: the competitors of the relation
    /// keys. Absent from logs written before them (the gate then uses the thresholds alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contrast_keys: Vec<Vec<f32>>,
    /// The lowest relation cosine at which the gate fires because the entry's closest relation
    /// key beats its closest contrast key by `contrast_margin` (`None`: no contrast rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrast_floor: Option<f32>,
    /// How much closer than every contrast key the relation key must be.
    #[serde(default)]
    pub contrast_margin: f32,
    /// Positions after the subject within which the relation gate may fire.
    pub window: usize,
    /// Added to the MLP output of `relation_layer` where both gates fire, `d_model` values.
    pub value: Vec<f32>,
}

fn default_opening() -> f32 {
    DEFAULT_OPENING_THRESHOLD
}

/// What the log holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogContents {
    /// Identity of the base model the deltas apply to.
    pub model: String,
    /// The applied edits, oldest first.
    pub edits: Vec<Edit>,
}

impl LogContents {
    /// Decodes an edit log's payload (the envelope already opened): the JSON of
    /// [`LogContents`]; the error says what did not parse.
    pub fn decode(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|e| format!("payload: {e}"))
    }
}
