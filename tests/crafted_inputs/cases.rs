//! The crafted cases, by input kind: model files, generation flags, LoRA adapters, JSONL
//! files, training and learning flags, state directories, edit requests and configurations.

use engram::runtime::format::GgufBuilder;
use serde_json::json;

use super::*;
/// Builds the cases; `f` holds the fixtures the cases point at.
pub(super) fn cases(f: &Fixtures) -> Vec<Case> {
    let d = f.dir.path();
    let m = s(&f.model);
    let mut out = Vec::new();
    macro_rules! add {
        ($command:expr, $name:expr, $args:expr, $needles:expr) => {
            out.push(Case {
                command: $command,
                name: $name.to_string(),
                args: $args,
                stdin: None,
                needles: $needles.iter().map(|n| n.to_string()).collect(),
            })
        };
    }
    let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // ---- model files: every command that loads a model goes through the same checks ----
    let good = std::fs::read(&f.model).unwrap();
    let bad_models: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("empty", Vec::new(), &["empty.gguf", "GGUF"]),
        (
            "not gguf",
            b"hello world, not a model".to_vec(),
            &["not-gguf.gguf", "GGUF"],
        ),
        ("header only", good[..40].to_vec(), &["header-only.gguf"]),
        (
            "truncated half",
            good[..good.len() / 2].to_vec(),
            &["truncated-half.gguf"],
        ),
        (
            "truncated by one",
            good[..good.len() - 1].to_vec(),
            &["truncated-by-one.gguf"],
        ),
        (
            "context 0",
            model_bytes(&[("llama.context_length", MetaValue::U32(0))]),
            &["context 0.gguf", "context_length"],
        ),
        (
            "context 2^31",
            model_bytes(&[("llama.context_length", MetaValue::U32(1 << 31))]),
            &["context_length"],
        ),
        (
            "rms_eps NaN",
            model_bytes(&[(
                "llama.attention.layer_norm_rms_epsilon",
                MetaValue::F32(f32::NAN),
            )]),
            &["layer_norm_rms_epsilon", "finite"],
        ),
        (
            "rms_eps negative",
            model_bytes(&[(
                "llama.attention.layer_norm_rms_epsilon",
                MetaValue::F32(-1.0),
            )]),
            &["layer_norm_rms_epsilon"],
        ),
        (
            "rope base inf",
            model_bytes(&[("llama.rope.freq_base", MetaValue::F32(f32::INFINITY))]),
            &["rope.freq_base"],
        ),
        (
            "rope base 0",
            model_bytes(&[("llama.rope.freq_base", MetaValue::F32(0.0))]),
            &["rope.freq_base"],
        ),
        (
            "rms_eps as string",
            model_bytes(&[(
                "llama.attention.layer_norm_rms_epsilon",
                MetaValue::Str("1e-5".into()),
            )]),
            &["layer_norm_rms_epsilon"],
        ),
        (
            "vocab 2^30",
            model_bytes(&[("llama.vocab_size", MetaValue::U32(1 << 30))]),
            &["vocab_size"],
        ),
        (
            "block_count huge",
            model_bytes(&[("llama.block_count", MetaValue::U32(u32::MAX))]),
            &["block_count"],
        ),
        (
            "heads 0",
            model_bytes(&[("llama.attention.head_count", MetaValue::U32(0))]),
            &["heads"],
        ),
        (
            "tokenizer shorter than vocab",
            {
                let tokens: Vec<MetaValue> =
                    (0..100).map(|i| MetaValue::Str(format!("t{i}"))).collect();
                model_bytes(&[
                    ("tokenizer.ggml.tokens", MetaValue::Array(tokens)),
                    (
                        "tokenizer.ggml.token_type",
                        MetaValue::Array(vec![MetaValue::I32(1); 100]),
                    ),
                ])
            },
            &["tokenizer", "vocab"],
        ),
        (
            "eos id outside vocab",
            model_bytes(&[("tokenizer.ggml.eos_token_id", MetaValue::U32(1_000_000))]),
            &["1000000"],
        ),
    ];
    for (name, bytes, needles) in bad_models {
        let file = format!("{}.gguf", name.replace(' ', "-"));
        let file = if name == "context 0" {
            "context 0.gguf".to_string()
        } else {
            file
        };
        let p = write(d, &format!("models/{file}"), bytes);
        let p = s(&p);
        let prompt = ["--prompt", "hi"];
        let runs: [(&'static str, Vec<String>); 4] = [
            (
                "generate",
                [&["generate", "--model", &p][..], &prompt]
                    .concat()
                    .iter()
                    .map(|x| x.to_string())
                    .collect(),
            ),
            (
                "logits",
                [&["logits", "--model", &p][..], &prompt]
                    .concat()
                    .iter()
                    .map(|x| x.to_string())
                    .collect(),
            ),
            (
                "bench",
                v(&[
                    "bench",
                    "--model",
                    &p,
                    "--prompt-tokens",
                    "4",
                    "--gen-tokens",
                    "2",
                    "--runs",
                    "1",
                ]),
            ),
            (
                "train-bench",
                v(&[
                    "train-bench",
                    "--model",
                    &p,
                    "--steps",
                    "1",
                    "--seq-len",
                    "8",
                    "--batch",
                    "1",
                ]),
            ),
        ];
        for (command, args) in runs {
            add!(command, &format!("model: {name}"), args, needles);
        }
        // `info` only parses the container: the metadata checks are for commands that run it.
        if matches!(
            name,
            "empty" | "not gguf" | "header only" | "truncated half" | "truncated by one"
        ) {
            add!("info", &format!("model: {name}"), v(&["info", &p]), needles);
        }
    }
    add!(
        "info",
        "missing file",
        v(&["info", &s(&d.join("nope.gguf"))]),
        &["nope.gguf"]
    );
    add!("info", "a directory", v(&["info", &s(d)]), &[&s(d)]);
    add!(
        "model-path",
        "missing --model",
        v(&["model-path", "--model", &s(&d.join("nope.gguf"))]),
        &["nope.gguf"]
    );

    // ---- generate / logits / chat flags ----
    let gen_flags: &[(&str, &[&str], &[&str])] = &[
        (
            "max-tokens 0",
            &["--max-tokens", "0"],
            &["--max-tokens", "at least 1"],
        ),
        ("max-tokens -1", &["--max-tokens=-1"], &["--max-tokens"]),
        (
            "max-tokens huge",
            &["--max-tokens", "99999999999999999999999"],
            &["--max-tokens"],
        ),
        (
            "temperature NaN",
            &["--temperature", "NaN"],
            &["--temperature", "finite"],
        ),
        (
            "temperature inf",
            &["--temperature", "inf"],
            &["--temperature", "finite"],
        ),
        ("temperature -1", &["--temperature=-1"], &["--temperature"]),
        (
            "temperature word",
            &["--temperature", "hot"],
            &["--temperature"],
        ),
        ("top-p 0", &["--top-p", "0"], &["--top-p"]),
        ("top-p 2", &["--top-p", "2"], &["--top-p"]),
        ("top-p NaN", &["--top-p", "nan"], &["--top-p"]),
        (
            "context 0",
            &["--context", "0"],
            &["--context", "at least 1"],
        ),
        (
            "context above the model's",
            &["--context", "100000"],
            &["--context 100000", "64"],
        ),
        ("threads huge", &["--threads", "100000000"], &["--threads"]),
    ];
    for (name, flags, needles) in gen_flags {
        let mut a = v(&["generate", "--model", &m, "--prompt", "hi"]);
        a.extend(v(flags));
        add!("generate", name, a, needles);
        let mut a = v(&["chat", "--model", &m]);
        a.extend(v(flags));
        out.push(Case {
            command: "chat",
            name: name.to_string(),
            args: a,
            stdin: Some(b"hello\n".to_vec()),
            needles: needles.iter().map(|n| n.to_string()).collect(),
        });
    }
    let long = "x".repeat(5000);
    for command in ["generate", "logits"] {
        add!(
            command,
            "empty prompt",
            v(&[command, "--model", &m, "--prompt", ""]),
            &["prompt", "empty"]
        );
        add!(
            command,
            "prompt longer than the context",
            v(&[command, "--model", &m, "--prompt", &long]),
            &["prompt", "context"]
        );
        add!(
            command,
            "adapter dir missing",
            v(&[
                command,
                "--model",
                &m,
                "--prompt",
                "hi",
                "--lora",
                &s(&d.join("no-adapter"))
            ]),
            &["no-adapter"]
        );
        add!(
            command,
            "state dir missing",
            v(&[
                command,
                "--model",
                &m,
                "--prompt",
                "hi",
                "--state",
                &s(&d.join("no-state"))
            ]),
            &["no-state"]
        );
    }
    add!(
        "logits",
        "top 0",
        v(&["logits", "--model", &m, "--prompt", "hi", "--top", "0"]),
        &["--top"]
    );
    out.push(Case {
        command: "chat",
        name: "turn longer than the context".into(),
        args: v(&["chat", "--model", &m]),
        stdin: Some(format!("{long}\n").into_bytes()),
        needles: vec!["context".into()],
    });
    out.push(Case {
        command: "chat",
        name: "state is a file".into(),
        args: v(&["chat", "--model", &m, "--state", &m]),
        stdin: Some(b"hi\n".to_vec()),
        needles: vec!["tiny.gguf".into()],
    });

    // ---- LoRA adapters (generate --lora and logits --lora read the same loader) ----
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.peft.join("adapter_config.json")).unwrap())
            .unwrap();
    let weights = std::fs::read(f.peft.join("adapter_model.safetensors")).unwrap();
    let gguf = std::fs::read(f.peft.join("adapter.gguf")).unwrap();
    let mut adapters: Vec<(String, PathBuf, Vec<&str>)> = Vec::new();
    let mut peft_case = |name: &str,
                         edit: &dyn Fn(&mut serde_json::Value),
                         weights: &[u8],
                         needles: Vec<&'static str>| {
        let dir = d.join(format!("adapters/{}", name.replace(' ', "-")));
        let mut c = config.clone();
        edit(&mut c);
        write(&dir, "adapter_config.json", serde_json::to_vec(&c).unwrap());
        write(&dir, "adapter_model.safetensors", weights);
        adapters.push((name.to_string(), dir, needles));
    };
    let set =
        |k: &'static str, x: serde_json::Value| move |c: &mut serde_json::Value| c[k] = x.clone();
    peft_case(
        "rank huge",
        &set("r", json!(1_000_000_000u64)),
        &weights,
        vec!["adapter_config.json", "rank"],
    );
    peft_case(
        "rank 0",
        &set("r", json!(0)),
        &weights,
        vec!["adapter_config.json", "rank"],
    );
    peft_case(
        "rank as string",
        &set("r", json!("2")),
        &weights,
        vec!["adapter_config.json", "r"],
    );
    peft_case(
        "rank negative",
        &set("r", json!(-2)),
        &weights,
        vec!["adapter_config.json", "r"],
    );
    peft_case(
        "rank missing",
        &|c| {
            c.as_object_mut().unwrap().remove("r");
        },
        &weights,
        vec!["adapter_config.json", "r"],
    );
    peft_case(
        "alpha as string",
        &set("lora_alpha", json!("16")),
        &weights,
        vec!["adapter_config.json", "lora_alpha"],
    );
    peft_case(
        "alpha 1e38",
        &set("lora_alpha", json!(1e38)),
        &weights,
        vec!["adapter_config.json", "alpha"],
    );
    peft_case(
        "dropout 2",
        &set("lora_dropout", json!(2.0)),
        &weights,
        vec!["adapter_config.json", "dropout"],
    );
    peft_case(
        "dropout as string",
        &set("lora_dropout", json!("0.1")),
        &weights,
        vec!["adapter_config.json", "lora_dropout"],
    );
    peft_case(
        "rslora as string",
        &set("use_rslora", json!("yes")),
        &weights,
        vec!["adapter_config.json", "use_rslora"],
    );
    peft_case(
        "targets a number",
        &set("target_modules", json!(5)),
        &weights,
        vec!["adapter_config.json", "target_modules"],
    );
    peft_case(
        "targets unknown",
        &set("target_modules", json!(["bogus_proj"])),
        &weights,
        vec!["adapter_config.json", "bogus_proj"],
    );
    peft_case(
        "targets mixed types",
        &set("target_modules", json!(["q_proj", 3])),
        &weights,
        vec!["adapter_config.json", "target_modules"],
    );
    peft_case(
        "layers past the model",
        &set("layers_to_transform", json!([0, 1, 2, 3])),
        &weights,
        vec!["adapter_config.json", "layers_to_transform"],
    );
    peft_case(
        "layers as strings",
        &set("layers_to_transform", json!(["0"])),
        &weights,
        vec!["adapter_config.json", "layers_to_transform"],
    );
    peft_case(
        "layer huge",
        &set("layers_to_transform", json!(1u64 << 40)),
        &weights,
        vec!["adapter_config.json", "layers_to_transform"],
    );
    peft_case(
        "peft type",
        &set("peft_type", json!("IA3")),
        &weights,
        vec!["adapter_config.json", "peft_type"],
    );
    peft_case(
        "DoRA",
        &set("use_dora", json!(true)),
        &weights,
        vec!["adapter_config.json", "use_dora"],
    );
    peft_case(
        "modules to save",
        &set("modules_to_save", json!(["lm_head"])),
        &weights,
        vec!["adapter_config.json", "modules_to_save"],
    );
    peft_case(
        "rank pattern",
        &set("rank_pattern", json!({"q_proj": 4})),
        &weights,
        vec!["adapter_config.json", "rank_pattern"],
    );
    peft_case(
        "config an array",
        &|c| *c = json!([1, 2]),
        &weights,
        vec!["adapter_config.json"],
    );
    peft_case(
        "weights empty",
        &|_| {},
        &[],
        vec!["adapter_model.safetensors"],
    );
    peft_case(
        "weights truncated",
        &|_| {},
        &weights[..weights.len() / 2],
        vec!["adapter_model.safetensors"],
    );
    let mut huge_header = weights.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    peft_case(
        "weights header length huge",
        &|_| {},
        &huge_header,
        vec!["adapter_model.safetensors"],
    );
    let mut nan_weights = weights.clone();
    let n = nan_weights.len();
    nan_weights[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    peft_case(
        "weights NaN",
        &|_| {},
        &nan_weights,
        vec!["adapter_model.safetensors", "non-finite"],
    );
    peft_case(
        "weights of rank 4 for r 2",
        &set("r", json!(4)),
        &weights,
        vec!["adapter_model.safetensors", "shape"],
    );
    // llama.cpp LoRA GGUF files.
    let lora_gguf = |alpha: f32, dims_a: &[usize], dims_b: &[usize]| {
        GgufBuilder::new()
            .metadata("general.architecture", MetaValue::Str("llama".into()))
            .metadata("general.type", MetaValue::Str("adapter".into()))
            .metadata("adapter.type", MetaValue::Str("lora".into()))
            .metadata("adapter.lora.alpha", MetaValue::F32(alpha))
            .tensor(
                "blk.0.attn_q.weight.lora_a",
                dims_a,
                GgmlType::F32,
                &vec![0u8; dims_a.iter().product::<usize>() * 4],
            )
            .tensor(
                "blk.0.attn_q.weight.lora_b",
                dims_b,
                GgmlType::F32,
                &vec![0u8; dims_b.iter().product::<usize>() * 4],
            )
            .build()
    };
    let mut gguf_case = |name: &str, bytes: Vec<u8>, needles: Vec<&'static str>| {
        let p = write(
            d,
            &format!("adapters/{}.gguf", name.replace(' ', "-")),
            bytes,
        );
        adapters.push((name.to_string(), p, needles));
    };
    gguf_case(
        "gguf rank 2^40 of empty rows",
        lora_gguf(8.0, &[0, 1 << 40], &[1 << 40, 0]),
        vec!["rank"],
    );
    gguf_case(
        "gguf rank above the width",
        lora_gguf(8.0, &[64, 100], &[100, 64]),
        vec!["rank"],
    );
    gguf_case(
        "gguf alpha NaN",
        lora_gguf(f32::NAN, &[64, 2], &[2, 64]),
        vec!["alpha"],
    );
    gguf_case(
        "gguf alpha 1e38",
        lora_gguf(1e38, &[64, 2], &[2, 64]),
        vec!["alpha"],
    );
    gguf_case(
        "gguf n_in wrong",
        lora_gguf(8.0, &[32, 2], &[2, 64]),
        vec!["dims"],
    );
    gguf_case("gguf truncated", gguf[..gguf.len() / 2].to_vec(), vec![]);
    gguf_case("gguf empty", Vec::new(), vec![]);
    gguf_case("gguf is a model", model_bytes(&[]), vec!["adapter"]);
    for (name, path, needles) in &adapters {
        let mut needles: Vec<&str> = needles.clone();
        let shown = s(path);
        needles.push(&shown);
        for command in ["generate", "logits"] {
            add!(
                command,
                &format!("adapter: {name}"),
                v(&[command, "--model", &m, "--prompt", "hi", "--lora", &shown]),
                &needles
            );
        }
    }

    // ---- JSONL files: train / learn / eval examples, edit requests ----
    let long_text = "y".repeat(2 << 20);
    let jsonl_text: Vec<(&str, String, &str)> = vec![
        ("empty file", String::new(), "no examples"),
        ("blank lines only", "\n\n  \n".into(), "no examples"),
        ("not json", "hello\n".into(), ":1:"),
        (
            "truncated line",
            format!("{EXAMPLE}\n{{\"prompt\": \"a"),
            ":2:",
        ),
        ("array", "[1, 2]\n".into(), ":1:"),
        (
            "prompt a number",
            r#"{"prompt": 5, "completion": "a"}"#.into(),
            ":1:",
        ),
        (
            "empty prompt",
            r#"{"prompt": "", "completion": "a"}"#.into(),
            ":1:",
        ),
        (
            "empty completion",
            r#"{"prompt": "a", "completion": ""}"#.into(),
            ":1:",
        ),
        (
            "missing completion",
            format!("{EXAMPLE}\n{EXAMPLE}\n{{\"prompt\": \"a\"}}"),
            ":3:",
        ),
        (
            "huge completion",
            format!("{{\"prompt\": \"a\", \"completion\": \"{long_text}\"}}"),
            ":1:",
        ),
    ];
    let mut jsonl: Vec<(&str, Vec<u8>, &str)> = jsonl_text
        .into_iter()
        .map(|(n, t, w)| (n, t.into_bytes(), w))
        .collect();
    jsonl.push((
        "invalid utf-8",
        b"{\"prompt\": \"\xff\xfe\", \"completion\": \"a\"}\n".to_vec(),
        "UTF-8",
    ));
    for (name, text, needle) in &jsonl {
        let p = s(&write(
            d,
            &format!("data/{}.jsonl", name.replace(' ', "-")),
            text,
        ));
        let out_dir = s(&d.join(format!("out-{}", name.replace(' ', "-"))));
        let state = s(&d.join(format!("state-{}", name.replace(' ', "-"))));
        let needles = [&p[..], needle];
        add!(
            "train",
            &format!("data: {name}"),
            v(&[
                "train",
                "--model",
                &m,
                "--data",
                &p,
                "--out",
                &out_dir,
                "--epochs",
                "1",
                "--rank",
                "2",
                "--seq-len",
                "32"
            ]),
            &needles
        );
        add!(
            "train",
            &format!("eval data: {name}"),
            v(&[
                "train",
                "--model",
                &m,
                "--data",
                &s(&write(d, "data/good.jsonl", format!("{EXAMPLE}\n"))),
                "--eval",
                &p,
                "--out",
                &out_dir,
                "--epochs",
                "1",
                "--rank",
                "2",
                "--seq-len",
                "32"
            ]),
            &needles
        );
        add!(
            "learn",
            &format!("data: {name}"),
            v(&["learn", "--model", &m, "--state", &state, "--data", &p]),
            &needles
        );
        add!(
            "eval",
            &format!("data: {name}"),
            v(&["eval", "--model", &m, "--data", &p]),
            &needles
        );
    }
    // A prompt longer than the context: the learner cuts sequences to --max-len, so for it
    // only eval and train refuse it (nothing of the completion would be read).
    let too_long = s(&write(
        d,
        "data/prompt-too-long.jsonl",
        format!(
            "{{\"prompt\": \"{}\", \"completion\": \"a\"}}\n",
            "p".repeat(200)
        ),
    ));
    add!(
        "train",
        "data: prompt longer than the context",
        v(&[
            "train",
            "--model",
            &m,
            "--data",
            &too_long,
            "--out",
            &s(&d.join("out-long")),
            "--epochs",
            "1",
            "--rank",
            "2",
            "--seq-len",
            "32"
        ]),
        &[&too_long, ":1:", "context"]
    );
    add!(
        "eval",
        "data: prompt longer than the context",
        v(&["eval", "--model", &m, "--data", &too_long]),
        &[&too_long, ":1:", "context"]
    );
    add!(
        "learn",
        "data: missing file",
        v(&[
            "learn",
            "--model",
            &m,
            "--state",
            &s(&d.join("state-missing")),
            "--data",
            &s(&d.join("missing.jsonl"))
        ]),
        &["missing.jsonl"]
    );

    let good_data = s(&write(d, "data/good.jsonl", format!("{EXAMPLE}\n")));
    let train = |extra: &[&str]| {
        let mut a = v(&[
            "train", "--model", &m, "--data", &good_data, "--epochs", "1",
        ]);
        if !extra.contains(&"--out") {
            a.extend(v(&["--out", &s(&d.join("out-flags"))]));
        }
        if !extra.contains(&"--seq-len") {
            a.extend(v(&["--seq-len", "32"]));
        }
        a.extend(v(extra));
        a
    };
    let train_flags: &[(&str, &[&str], &[&str])] = &[
        ("rank 0", &["--rank", "0"], &["--rank"]),
        ("rank huge", &["--rank", "1000000"], &["--rank 1000000"]),
        ("alpha NaN", &["--alpha", "NaN"], &["--alpha"]),
        ("alpha inf", &["--alpha", "inf"], &["--alpha"]),
        ("alpha 1e38", &["--alpha", "1e38"], &["--alpha"]),
        ("dropout 1", &["--dropout", "1"], &["--dropout"]),
        ("dropout NaN", &["--dropout", "NaN"], &["--dropout"]),
        (
            "layers past the model",
            &["--layers", "0..100"],
            &["--layers 0..100", "2 blocks"],
        ),
        ("layers reversed", &["--layers", "2..1"], &["--layers 2..1"]),
        ("layers empty", &["--layers", "1..1"], &["--layers 1..1"]),
        ("layers not a range", &["--layers", "abc"], &["--layers"]),
        ("lr NaN", &["--lr", "NaN"], &["--lr"]),
        ("lr 0", &["--lr", "0"], &["--lr"]),
        ("lr negative", &["--lr=-1"], &["--lr"]),
        ("budget 0", &["--budget-mib", "0"], &["--budget-mib"]),
        (
            "budget overflowing",
            &["--budget-mib", "18446744073709551615"],
            &["--budget-mib"],
        ),
        ("budget too small", &["--budget-mib", "1"], &["MiB"]),
        ("seq-len 0", &["--seq-len", "0"], &["--seq-len"]),
        (
            "seq-len above the context",
            &["--seq-len", "100000"],
            &["--seq-len 100000"],
        ),
        ("batch 0", &["--batch", "0"], &["--batch"]),
        ("grad-accum 0", &["--grad-accum", "0"], &["--grad-accum"]),
        ("epochs 0", &["--epochs", "0"], &["--epochs"]),
        ("targets unknown", &["--targets", "zz"], &["--targets"]),
        ("out is a file", &["--out", &m], &["tiny.gguf"]),
    ];
    for (name, flags, needles) in train_flags {
        add!("train", name, train(flags), needles);
    }
    let bench_flags: &[(&str, &[&str], &[&str])] = &[
        ("rank 0", &["--rank", "0"], &["--rank"]),
        ("rank huge", &["--rank", "1000000"], &["--rank 1000000"]),
        (
            "layers past the model",
            &["--layers", "0..100"],
            &["--layers 0..100"],
        ),
        ("seq-len 0", &["--seq-len", "0"], &["--seq-len"]),
        (
            "seq-len above the context",
            &["--seq-len", "100000"],
            &["--seq-len 100000"],
        ),
        ("batch 0", &["--batch", "0"], &["--batch"]),
        ("steps 0", &["--steps", "0"], &["--steps"]),
        ("alpha NaN", &["--alpha", "nan"], &["--alpha"]),
    ];
    for (name, flags, needles) in bench_flags {
        let mut a = v(&["train-bench", "--model", &m, "--steps", "1"]);
        a.extend(v(flags));
        add!("train-bench", name, a, needles);
    }
    let bench: &[(&str, &[&str], &[&str])] = &[
        (
            "prompt-tokens 0",
            &["--prompt-tokens", "0"],
            &["--prompt-tokens"],
        ),
        (
            "prompt-tokens huge",
            &["--prompt-tokens", "1000000000000"],
            &["--prompt-tokens 1000000000000"],
        ),
        ("gen-tokens 0", &["--gen-tokens", "0"], &["--gen-tokens"]),
        (
            "gen-tokens above the context",
            &["--gen-tokens", "100000"],
            &["--gen-tokens 100000"],
        ),
        ("repeats 0", &["--repeats", "0"], &["--repeats"]),
        (
            "threads huge",
            &["--threads", "1,100000000"],
            &["--threads"],
        ),
        ("threads word", &["--threads", "many"], &["--threads"]),
    ];
    for (name, flags, needles) in bench {
        let mut a = v(&["bench", "--model", &m, "--runs", "1"]);
        a.extend(v(flags));
        add!("bench", name, a, needles);
    }
    let learn = |name: &str, extra: &[&str]| {
        let mut a = v(&["learn", "--model", &m, "--data", &good_data]);
        if !extra.contains(&"--state") {
            a.extend(v(&[
                "--state",
                &s(&d.join(format!("lstate-{}", name.replace(' ', "-")))),
            ]));
        }
        a.extend(v(extra));
        a
    };
    let learn_flags: &[(&str, &[&str], &[&str])] = &[
        ("rank 0", &["--rank", "0"], &["--rank"]),
        ("rank huge", &["--rank", "1000000"], &["--rank 1000000"]),
        ("lr NaN", &["--lr", "NaN"], &["--lr"]),
        ("lr inf", &["--lr", "inf"], &["--lr"]),
        ("batch 0", &["--batch", "0"], &["--batch"]),
        ("buffer 0", &["--buffer", "0"], &["--buffer"]),
        ("max-len 0", &["--max-len", "0"], &["--max-len"]),
        (
            "max-len above the context",
            &["--max-len", "100000"],
            &["--max-len 100000"],
        ),
        ("budget 0", &["--budget-mib", "0"], &["--budget-mib"]),
        (
            "budget overflowing",
            &["--budget-mib", "17592186044416"],
            &["--budget-mib"],
        ),
        ("steps 0", &["--steps", "0"], &["--steps"]),
        ("epochs 0", &["--epochs", "0"], &["--epochs"]),
        (
            "commit-every 0",
            &["--commit-every", "0"],
            &["--commit-every"],
        ),
        ("state is a file", &["--state", &m], &["tiny.gguf"]),
    ];
    for (name, flags, needles) in learn_flags {
        add!("learn", name, learn(name, flags), needles);
    }

    // ---- state directories ----
    let garbage_state = d.join("garbage-state");
    write(&garbage_state, ".engram-manifest", b"\x00\x01garbage");
    write(&garbage_state, "adapter.bin", b"garbage");
    let empty_state = d.join("empty-state");
    std::fs::create_dir_all(&empty_state).unwrap();
    for (name, dir) in [
        ("garbage manifest", &garbage_state),
        ("missing", &d.join("no-such-state")),
        ("a file", &f.model),
    ] {
        let ds = s(dir);
        add!(
            "state",
            name,
            v(&["state", &ds, "--model", &m, "--verify"]),
            &[&ds]
        );
        add!(
            "eval",
            &format!("state {name}"),
            v(&["eval", "--model", &m, "--data", &good_data, "--state", &ds]),
            &[&ds]
        );
    }
    add!(
        "state",
        "empty dir --verify",
        v(&["state", &s(&empty_state), "--model", &m, "--verify"]),
        &[&s(&empty_state)]
    );

    // ---- edit: requests, flags, config, log ----
    let facts = |name: &str, text: String| {
        s(&write(
            d,
            &format!("facts/{}.jsonl", name.replace(' ', "-")),
            text,
        ))
    };
    let good_facts = facts("good", format!("{FACT}\n"));
    let fact_with = |k: &str, x: serde_json::Value| {
        let mut f: serde_json::Value = serde_json::from_str(FACT).unwrap();
        f[k] = x;
        f.to_string()
    };
    let edit_files: Vec<(&str, String, &str)> = vec![
        ("empty file", String::new(), "no requests"),
        ("not json", "nope\n".into(), "line 1"),
        ("truncated", format!("{FACT}\n{}", &FACT[..30]), "line 2"),
        ("subject a number", fact_with("subject", json!(3)), "line 1"),
        (
            "empty target",
            fact_with("target_new", json!("")),
            "target_new",
        ),
        (
            "empty paraphrase",
            fact_with("rephrase_prompts", json!([""])),
            "rephrase_prompts",
        ),
        (
            "empty locality prompt",
            fact_with("locality_prompts", json!(["  "])),
            "locality_prompts",
        ),
        (
            "empty portability prompt",
            fact_with("portability_prompts", json!([""])),
            "portability_prompts",
        ),
        (
            "huge target",
            fact_with("target_new", json!("z".repeat(100_000))),
            "target_new",
        ),
        (
            "prompt longer than the context",
            fact_with("prompt", json!(format!("Zork {}", "w".repeat(200)))),
            "context",
        ),
        (
            "paraphrase longer than the context",
            fact_with("rephrase_prompts", json!(["q".repeat(200)])),
            "context",
        ),
        (
            "subject not in prompt",
            fact_with("subject", json!("Quux")),
            "subject",
        ),
    ];
    for (name, text, needle) in &edit_files {
        let p = facts(name, text.clone());
        for method in ["gated", "rome"] {
            add!(
                "edit",
                &format!("facts ({method}): {name}"),
                v(&[
                    "edit",
                    "--model",
                    &m,
                    "--facts",
                    &p,
                    "--method",
                    method,
                    "--generate",
                    "0",
                    "--stats-dir",
                    &s(&d.join("stats"))
                ]),
                &[p.as_str(), needle]
            );
        }
        add!(
            "edit",
            &format!("facts (--state): {name}"),
            v(&[
                "edit",
                "--model",
                &m,
                "--facts",
                &p,
                "--state",
                &s(&d.join("edit-state"))
            ]),
            &[p.as_str(), needle]
        );
    }
    let cfg = |name: &str, x: serde_json::Value| {
        s(&write(
            d,
            &format!("configs/{}.json", name.replace(' ', "-")),
            x.to_string(),
        ))
    };
    let edit_cfgs: Vec<(&str, &str, String, &[&str])> = vec![
        (
            "rome",
            "rome layer 999",
            cfg("rome layer 999", json!({"rome_layer": 999})),
            &["rome_layer", "999"],
        ),
        (
            "memit",
            "memit layers empty",
            cfg("memit layers empty", json!({"memit_layers": []})),
            &["memit_layers"],
        ),
        (
            "memit",
            "memit layer 999",
            cfg("memit layer 999", json!({"memit_layers": [0, 999]})),
            &["memit_layers", "999"],
        ),
        (
            "grace",
            "grace layer 999",
            cfg("grace layer 999", json!({"grace_layer": 999})),
            &["grace_layer", "999"],
        ),
        (
            "rome",
            "stats tokens a string",
            cfg("stats tokens a string", json!({"stats_tokens": "many"})),
            &["stats_tokens"],
        ),
        (
            "rome",
            "unknown field",
            cfg("unknown field", json!({"rome_layr": 1})),
            &["rome_layr"],
        ),
        (
            "rome",
            "not json",
            s(&write(d, "configs/not-json.json", "{")),
            &["not-json.json"],
        ),
    ];
    for (method, name, p, needles) in &edit_cfgs {
        let mut needles: Vec<&str> = needles.to_vec();
        needles.push(p);
        add!(
            "edit",
            &format!("config: {name}"),
            v(&[
                "edit",
                "--model",
                &m,
                "--facts",
                &good_facts,
                "--method",
                method,
                "--config",
                p,
                "--generate",
                "0",
                "--stats-dir",
                &s(&d.join("stats"))
            ]),
            &needles
        );
    }
    add!(
        "edit",
        "--layer 999",
        v(&[
            "edit",
            "--model",
            &m,
            "--facts",
            &good_facts,
            "--method",
            "rome",
            "--layer",
            "999",
            "--generate",
            "0",
            "--stats-dir",
            &s(&d.join("stats"))
        ]),
        &["--layer 999"]
    );
    add!(
        "edit",
        "--layer huge",
        v(&[
            "edit",
            "--model",
            &m,
            "--facts",
            &good_facts,
            "--method",
            "rome",
            "--layer",
            "18446744073709551615",
            "--generate",
            "0"
        ]),
        &["--layer"]
    );
    add!(
        "edit",
        "--trace huge",
        v(&[
            "edit",
            "--model",
            &m,
            "--facts",
            &good_facts,
            "--trace",
            "0"
        ]),
        &["--trace"]
    );
    add!(
        "edit",
        "--separation 0",
        v(&[
            "edit",
            "--model",
            &m,
            "--facts",
            &good_facts,
            "--separation",
            "0"
        ]),
        &["--separation"]
    );
    add!(
        "edit",
        "facts missing",
        v(&["edit", "--model", &m, "--facts", &s(&d.join("nope.jsonl"))]),
        &["nope.jsonl"]
    );
    for (flag, value) in [("--layer", "1"), ("--config", "x.json"), ("--limit", "1")] {
        add!(
            "edit",
            format!("--state with {flag} (the state keeps its settings)"),
            v(&[
                "edit",
                "--model",
                &m,
                "--facts",
                &good_facts,
                "--state",
                &s(&d.join("edit-state")),
                flag,
                value,
            ]),
            &[flag, "cannot be used with"]
        );
    }
    for (name, bytes) in [
        ("log garbage", b"garbage garbage garbage".to_vec()),
        ("log empty", Vec::new()),
        ("log huge length", {
            let mut b = b"ENGRAM".to_vec();
            b.extend([0xff; 64]);
            b
        }),
    ] {
        let p = s(&write(
            d,
            &format!("logs/{}.log", name.replace(' ', "-")),
            bytes,
        ));
        add!(
            "edit",
            name,
            v(&[
                "edit",
                "--model",
                &m,
                "--facts",
                &good_facts,
                "--method",
                "gated",
                "--generate",
                "0",
                "--log",
                &p
            ]),
            &[&p]
        );
    }
    let cl: &[(&str, &[&str], &[&str])] = &[
        ("seeds 0", &["--seeds", "0"], &["--seeds"]),
        ("seeds huge", &["--seeds", "99999999999"], &["--seeds"]),
        (
            "epochs 0",
            &["--mode", "offline", "--epochs", "0"],
            &["--epochs"],
        ),
        ("hidden 0", &["--hidden", "100,0"], &["--hidden"]),
        (
            "lm-steps 0",
            &["--stream", "fortunes", "--lm-steps", "0"],
            &["--lm-steps"],
        ),
        ("buffers 0", &["--buffers", "0"], &["buffer"]),
        ("stream unknown", &["--stream", "cifar"], &["--stream"]),
    ];
    for (name, flags, needles) in cl {
        let mut a = v(&["cl-bench", "--model", &m]);
        a.extend(v(flags));
        add!("cl-bench", name, a, needles);
    }
    out
}
