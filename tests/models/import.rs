//! PyTorch parity of imported weights, and the importer's errors.
//!
//! The fixtures in `tests/fixtures/pytorch/` come from `scripts/make_import_fixtures.py`: for
//! each model, weights saved by `torch.save` and as safetensors, a batch of tokens, an initial
//! state and PyTorch's own logits and final states. No Python runs here.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use rnnlm::{Activation, CellKind, InputEncoding, Recurrent, RecurrentState};
use rnnlm_import::{ImportError, ImportOptions, KeyProblem, StateDict, import_core, import_lm};
use rnnlm_tests::{device, max_abs_diff, scratch_dir};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/pytorch")
        .join(name)
}

fn float_tensor<const D: usize>(io: &StateDict, key: &str, device: &Device) -> Tensor<D> {
    let data = io
        .get(key)
        .unwrap_or_else(|| panic!("fixture lacks {key}"))
        .clone();
    Tensor::from_data(data.convert::<f32>(), device)
}

/// Imports `weights`, runs the fixture's batch from its initial state and compares logits and
/// final states with PyTorch's.
fn check_parity(weights: &str, io: &str, options: &ImportOptions) -> String {
    let device = device();
    let dict = StateDict::read(&fixture(weights)).expect("fixture reads");
    let imported = import_lm(&dict, options, &device).expect("fixture imports");
    let io = StateDict::read(&fixture(io)).expect("io fixture reads");
    let tokens: Tensor<2, Int> =
        Tensor::from_data(io.get("tokens").expect("tokens").clone(), &device);
    let state = RecurrentState {
        hidden: float_tensor(&io, "h0", &device),
        cell: io.get("c0").map(|_| float_tensor(&io, "c0", &device)),
    };
    let (logits, state) = imported.model.forward(tokens, state);
    let expected: Tensor<3> = float_tensor(&io, "logits", &device);
    let diff = max_abs_diff(logits, expected);
    assert!(
        diff < 1e-5,
        "{weights}: logits differ from PyTorch's by {diff}"
    );
    let diff = max_abs_diff(state.hidden, float_tensor(&io, "hn", &device));
    assert!(
        diff < 1e-5,
        "{weights}: final hidden state differs by {diff}"
    );
    match (state.cell, io.get("cn")) {
        (Some(cell), Some(_)) => {
            let diff = max_abs_diff(cell, float_tensor(&io, "cn", &device));
            assert!(diff < 1e-5, "{weights}: final cell state differs by {diff}");
        }
        (None, None) => {}
        (cell, expected) => panic!(
            "{weights}: cell state present here: {}, in PyTorch: {}",
            cell.is_some(),
            expected.is_some()
        ),
    }
    imported.description
}

#[test]
fn pytorch_models_match_pytorch_outputs_from_pt_and_safetensors() {
    let relu = ImportOptions {
        nonlinearity: Activation::Relu,
        ..ImportOptions::default()
    };
    let default = ImportOptions::default();
    let cases = [
        (
            "rnn_tanh",
            &default,
            "2-layer nn.RNN(7, 5) + nn.Linear(5, 7)",
        ),
        ("rnn_relu", &relu, "2-layer nn.RNN(7, 5) + nn.Linear(5, 7)"),
        ("gru", &default, "2-layer nn.GRU(7, 5) + nn.Linear(5, 7)"),
        (
            "gru_no_bias",
            &default,
            "2-layer nn.GRU(7, 5, bias=False) + nn.Linear(5, 7)",
        ),
        ("lstm", &default, "2-layer nn.LSTM(7, 5) + nn.Linear(5, 7)"),
        (
            "lstm_embedding",
            &default,
            "nn.Embedding(7, 4) + 2-layer nn.LSTM(4, 5) + nn.Linear(5, 7)",
        ),
    ];
    for (name, options, description) in cases {
        for extension in ["pt", "safetensors"] {
            let found = check_parity(
                &format!("{name}.{extension}"),
                &format!("{name}.io.safetensors"),
                options,
            );
            assert_eq!(found, description, "{name}.{extension}");
        }
    }
}

#[test]
fn d2l_scratch_parameters_load_by_name_and_as_a_list() {
    let options = ImportOptions::default();
    let named = check_parity(
        "d2l_scratch.safetensors",
        "d2l_scratch.io.safetensors",
        &options,
    );
    assert_eq!(named, "d2l scratch RNN(7, 5) + W_hq [5, 7]");
    // d2l's classic RNNModelScratch: torch.save({"params": [W_xh, W_hh, b_h, W_hq, b_q]}).
    check_parity(
        "d2l_scratch_list.pt",
        "d2l_scratch.io.safetensors",
        &options,
    );
}

#[test]
fn the_nonlinearity_option_matters_for_nn_rnn() {
    let device = device();
    let dict = StateDict::read(&fixture("rnn_relu.pt")).unwrap();
    let io = StateDict::read(&fixture("rnn_relu.io.safetensors")).unwrap();
    let tokens: Tensor<2, Int> = Tensor::from_data(io.get("tokens").unwrap().clone(), &device);
    let as_tanh = import_lm(&dict, &ImportOptions::default(), &device).unwrap();
    let state = RecurrentState {
        hidden: float_tensor(&io, "h0", &device),
        cell: None,
    };
    let (logits, _) = as_tanh.model.forward(tokens, state);
    let diff = max_abs_diff(logits, float_tensor(&io, "logits", &device));
    assert!(
        diff > 1e-3,
        "a ReLU nn.RNN read as tanh should not match PyTorch (diff {diff})"
    );
}

#[test]
fn imported_config_describes_the_model() {
    let device = device();
    let dict = StateDict::read(&fixture("lstm_embedding.pt")).unwrap();
    let imported = import_lm(&dict, &ImportOptions::default(), &device).unwrap();
    let config = &imported.config;
    assert_eq!(config.kind, CellKind::Lstm);
    assert_eq!(
        (config.vocab_size, config.hidden_size, config.num_layers),
        (7, 5, 2)
    );
    assert_eq!(config.encoding, InputEncoding::Embedding);
    assert_eq!(config.embedding_dim, 4);
    // The config rebuilds a model with the same parameter shapes, so a saved record reloads.
    let rebuilt = config.init(&device);
    assert_eq!(rebuilt.num_params(), imported.model.num_params());
}

#[test]
fn a_core_alone_imports_under_its_prefix() {
    let device = device();
    let dict = StateDict::read(&fixture("gru.pt")).unwrap();
    let options = ImportOptions {
        prefix: Some("rnn.".to_owned()),
        ..ImportOptions::default()
    };
    let imported = import_core(&dict, &options, &device).unwrap();
    assert_eq!(imported.description, "2-layer nn.GRU(7, 5)");
    assert_eq!(
        (
            imported.core.input_size(),
            imported.core.hidden_size(),
            imported.core.num_layers()
        ),
        (7, 5, 2)
    );
    // The same core inside the imported LM gives the same hidden states.
    let lm = import_lm(&dict, &ImportOptions::default(), &device).unwrap();
    let tokens = rnnlm_tests::ids(&[1, 2, 3, 4, 5, 6], [2, 3], &device);
    let (expected, _) = lm
        .model
        .forward_hidden(tokens.clone(), lm.model.begin_state(2, &device));
    let one_hot = tokens.one_hot::<3>(7).float();
    let (hidden, _) = imported
        .core
        .forward(one_hot, imported.core.begin_state(2, &device));
    assert!(max_abs_diff(hidden.swap_dims(0, 1), expected) < 1e-6);
}

#[test]
fn an_imported_model_round_trips_through_a_checkpoint_directory() {
    let device = device();
    let dict = StateDict::read(&fixture("lstm.safetensors")).unwrap();
    let imported = import_lm(&dict, &ImportOptions::default(), &device).unwrap();
    let tokens: Vec<String> = ["<unk>", " ", "a", "b", "c", "d", "e"]
        .map(String::from)
        .to_vec();
    let vocab = rnnlm_data::Vocab::from_tokens(tokens).unwrap();
    let experiment: rnnlm_train::ExperimentConfig = toml::from_str(
        "[model]\nkind = \"lstm\"\nvocab_size = 7\nhidden_size = 5\nnum_layers = 2\n",
    )
    .unwrap();
    assert_eq!(experiment.model, imported.config);
    let dir = scratch_dir("import-roundtrip").join("checkpoint");
    rnnlm_train::save_model_dir(&dir, &experiment, &vocab, &imported.model).unwrap();
    let loaded = rnnlm_train::load_model(&dir, &device).unwrap();
    assert_eq!(loaded.vocab, vocab);
    let ids = rnnlm_tests::ids(&[1, 2, 3, 4, 5, 6], [2, 3], &device);
    let (a, _) = imported
        .model
        .forward(ids.clone(), imported.model.begin_state(2, &device));
    let (b, _) = loaded
        .model
        .forward(ids, loaded.model.begin_state(2, &device));
    assert_eq!(max_abs_diff(a, b), 0.0);
    // A second import into the same directory is refused rather than mixing two models.
    let err = rnnlm_train::save_model_dir(&dir, &experiment, &vocab, &imported.model)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not empty"), "{err}");
}

// ---- bad input ----

fn lstm_dict() -> StateDict {
    StateDict::read(&fixture("lstm.pt")).unwrap()
}

fn import_error(dict: &StateDict) -> ImportError {
    import_lm(dict, &ImportOptions::default(), &device()).expect_err("import should fail")
}

fn problems(err: ImportError) -> Vec<KeyProblem> {
    match err {
        ImportError::Mismatch { problems, .. } => problems,
        other => panic!("expected a key mismatch, got: {other}"),
    }
}

fn zeros(shape: &[usize]) -> TensorData {
    TensorData::new(vec![0.0f32; shape.iter().product()], shape.to_vec())
}

#[test]
fn missing_keys_are_listed_with_their_expected_shapes() {
    let mut dict = lstm_dict();
    dict.remove("rnn.weight_hh_l1");
    dict.remove("linear.bias");
    let err = import_error(&dict);
    let message = err.to_string();
    assert!(
        message.contains("rnn.weight_hh_l1") && message.contains("[20, 5]"),
        "{message}"
    );
    // Without its bias the Linear is not recognised as the head at all.
    assert!(
        message.contains("<linear>.weight and <linear>.bias"),
        "{message}"
    );

    let mut dict = lstm_dict();
    dict.remove("rnn.bias_hh_l1");
    let problems = problems(import_error(&dict));
    assert_eq!(
        problems,
        vec![KeyProblem::Missing {
            key: "rnn.bias_hh_l1".into(),
            expected: "[20]".into()
        }]
    );
}

#[test]
fn extra_and_misshapen_keys_are_listed_together() {
    let mut dict = lstm_dict();
    dict.insert("rnn.weight_hh_l1", zeros(&[20, 6]));
    dict.insert("step", TensorData::new(vec![3i64], [1]));
    let problems = problems(import_error(&dict));
    assert_eq!(
        problems,
        vec![
            KeyProblem::Shape {
                key: "rnn.weight_hh_l1".into(),
                found: vec![20, 6],
                expected: "[20, 5]".into()
            },
            KeyProblem::Unexpected {
                key: "step".into(),
                shape: vec![1]
            },
        ]
    );
}

/// A bidirectional language model cannot be (it would read the tokens it predicts); its file
/// is refused with that reason, and an LSTM with an output projection by name.
#[test]
fn bidirectional_language_models_and_projected_layers_are_refused_with_the_reason() {
    let dict = StateDict::read(&fixture("bilstm_padded.pt")).unwrap();
    let message = import_lm(&dict, &ImportOptions::default(), &device())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("model.bidirectional = true")
            && message.contains("would read the very tokens it is asked to predict"),
        "{message}"
    );
    let mut dict = lstm_dict();
    dict.insert("rnn.weight_hr_l0", zeros(&[3, 5]));
    let message = import_error(&dict).to_string();
    assert!(message.contains("proj_size"), "{message}");
}

#[test]
fn a_file_without_a_recurrent_core_lists_what_it_holds() {
    let dict = StateDict::from_tensors(
        "classifier.pt",
        [
            ("fc.weight".to_owned(), zeros(&[2, 3])),
            ("fc.bias".to_owned(), zeros(&[2])),
        ],
    );
    let message = import_error(&dict).to_string();
    assert!(
        message.contains("found no recurrent weights") && message.contains("fc.weight [2, 3]"),
        "{message}"
    );
}

#[test]
fn two_cores_are_ambiguous_until_a_prefix_picks_one() {
    let mut dict = lstm_dict();
    for key in ["weight_ih_l0", "weight_hh_l0"] {
        let data = dict.get(&format!("rnn.{key}")).unwrap().clone();
        dict.insert(format!("decoder.{key}"), data);
    }
    let message = import_error(&dict).to_string();
    assert!(message.contains("several recurrent cores"), "{message}");
    assert!(
        message.contains("\"decoder.\"") && message.contains("\"rnn.\""),
        "{message}"
    );

    // A training checkpoint {model: ..., optimizer: ...}: the prefix selects the model.
    let mut nested = StateDict::from_tensors("checkpoint.pt", []);
    for key in lstm_dict().keys().map(str::to_owned).collect::<Vec<_>>() {
        nested.insert(
            format!("model.{key}"),
            lstm_dict().get(&key).unwrap().clone(),
        );
    }
    nested.insert("optimizer.state.0.momentum_buffer", zeros(&[20, 7]));
    let message = import_error(&nested).to_string();
    assert!(
        message.contains("unexpected optimizer.state.0.momentum_buffer"),
        "{message}"
    );
    let options = ImportOptions {
        prefix: Some("model.".into()),
        ..ImportOptions::default()
    };
    import_lm(&nested, &options, &device()).expect("the prefix selects the model");
}

#[test]
fn another_cell_kind_than_asked_for_is_refused() {
    let options = ImportOptions {
        kind: Some(CellKind::Lstm),
        ..ImportOptions::default()
    };
    let dict = StateDict::read(&fixture("gru.pt")).unwrap();
    let message = import_lm(&dict, &options, &device())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("2-layer nn.GRU(7, 5)") && message.contains("not the lstm core"),
        "{message}"
    );
    import_lm(&lstm_dict(), &options, &device()).expect("an LSTM is what was asked for");
}

#[test]
fn integer_weights_and_unknown_gate_counts_are_refused() {
    let mut dict = lstm_dict();
    dict.insert("linear.bias", TensorData::new(vec![0i64; 7], [7]));
    let message = import_error(&dict).to_string();
    assert!(
        message.contains("linear.bias") && message.contains("floating point"),
        "{message}"
    );
    let mut dict = lstm_dict();
    dict.insert("rnn.weight_ih_l0", zeros(&[10, 7]));
    dict.insert("rnn.weight_hh_l0", zeros(&[10, 5]));
    let message = import_error(&dict).to_string();
    assert!(message.contains("4 for nn.LSTM"), "{message}");
}

#[test]
fn unreadable_files_name_the_file_and_the_format() {
    let dir = scratch_dir("import-bad-files");
    let garbage = dir.join("weights.pt");
    std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
    let message = StateDict::read(&garbage).unwrap_err().to_string();
    assert!(
        message.contains("weights.pt") && message.contains("PyTorch checkpoint"),
        "{message}"
    );
    let fake = dir.join("weights.safetensors");
    std::fs::write(&fake, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}       ").unwrap();
    let message = StateDict::read(&fake).unwrap_err().to_string();
    assert!(message.contains("safetensors"), "{message}");
    let message = StateDict::read(&dir.join("absent.pt"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("absent.pt"), "{message}");
}

#[test]
fn d2l_stacked_scratch_layers_load_in_order() {
    // d2l 1.0's StackedRNNScratch: rnn.rnns.{k}.W_xh / W_hh / b_h, then W_hq, b_q.
    let values = |shape: &[usize], offset: f32| {
        let n: usize = shape.iter().product();
        TensorData::new(
            (0..n)
                .map(|i| offset + i as f32 / 100.0)
                .collect::<Vec<f32>>(),
            shape.to_vec(),
        )
    };
    let mut tensors = Vec::new();
    for (layer, input) in [(0, 7), (1, 5)] {
        let prefix = format!("rnn.rnns.{layer}.");
        let base = layer as f32;
        tensors.push((format!("{prefix}W_xh"), values(&[input, 5], base)));
        tensors.push((format!("{prefix}W_hh"), values(&[5, 5], base + 0.5)));
        tensors.push((format!("{prefix}b_h"), values(&[5], base + 0.25)));
    }
    tensors.push(("W_hq".to_owned(), values(&[5, 7], 2.0)));
    tensors.push(("b_q".to_owned(), values(&[7], 3.0)));
    let dict = StateDict::from_tensors("stacked.pt", tensors);
    let imported = import_lm(&dict, &ImportOptions::default(), &device()).unwrap();
    assert_eq!(
        imported.description,
        "2-layer d2l scratch RNN(7, 5) + W_hq [5, 7]"
    );
    let rnnlm::RecurrentCore::RnnScratch(core) = &imported.model.core else {
        panic!("a scratch RNN");
    };
    let first = |t: Tensor<2>| rnnlm_tests::values(t)[0];
    assert_eq!(first(core.layers[0].w_xh.val()), 0.0);
    assert_eq!(first(core.layers[1].w_xh.val()), 1.0);
    assert_eq!(first(core.layers[1].w_hh.val()), 1.5);
    assert_eq!(
        rnnlm_tests::values(core.layers[1].b_h.as_ref().unwrap().val())[0],
        1.25
    );
}

/// PyTorch's bidirectional nn.GRU, nn.LSTM (two layers) and nn.RNN on a padded batch through
/// `pack_padded_sequence`: the imported cores give PyTorch's outputs (zero past each row's
/// length) and final states to 1e-5.
#[test]
fn bidirectional_cores_match_pytorch_on_packed_sequences() {
    let device = device();
    for (name, description) in [
        ("bigru_padded", "2-layer nn.GRU(3, 5, bidirectional=True)"),
        ("bilstm_padded", "2-layer nn.LSTM(3, 5, bidirectional=True)"),
        ("birnn_padded", "nn.RNN(3, 5, bidirectional=True)"),
    ] {
        for file in [format!("{name}.pt"), format!("{name}.safetensors")] {
            let dict = StateDict::read(&fixture(&file)).expect("fixture reads");
            let imported = import_core(&dict, &ImportOptions::default(), &device)
                .unwrap_or_else(|err| panic!("{file}: {err}"));
            assert_eq!(imported.description, description, "{file}");
            let core = imported.core;
            assert!(core.bidirectional(), "{file}");
            let io = StateDict::read(&fixture(&format!("{name}.io.safetensors"))).unwrap();
            let lengths: Vec<usize> = io
                .get("lengths")
                .expect("lengths")
                .clone()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .expect("integer lengths")
                .into_iter()
                .map(|length| length as usize)
                .collect();
            let state = RecurrentState {
                hidden: float_tensor(&io, "h0", &device),
                cell: io.get("c0").map(|_| float_tensor(&io, "c0", &device)),
            };
            let (out, end) = core
                .forward_padded(float_tensor(&io, "x", &device), &lengths, state)
                .expect("PyTorch's lengths fit");
            let diff = max_abs_diff(out, float_tensor(&io, "out", &device));
            assert!(
                diff < 1e-5,
                "{file}: outputs differ from PyTorch's by {diff}"
            );
            let diff = max_abs_diff(end.hidden, float_tensor(&io, "hn", &device));
            assert!(diff < 1e-5, "{file}: h_n differs from PyTorch's by {diff}");
            if let Some(cell) = end.cell {
                let diff = max_abs_diff(cell, float_tensor(&io, "cn", &device));
                assert!(diff < 1e-5, "{file}: c_n differs from PyTorch's by {diff}");
            }
        }
    }
}
