//! Export to PyTorch (`rnnlm::export`, `rnnlm_import::write_*`): every cell exported to both
//! file formats and imported back gives the same logits; the key names and shapes are
//! PyTorch's; what PyTorch cannot compute is refused with a typed error. (PyTorch itself reads
//! the files in the cross-backend suite, `tests/backends`, where a Python with torch exists.)

use std::path::Path;

use burn::module::Param;
use burn::nn::DropoutConfig;
use burn::prelude::*;
use rnnlm::export::{ExportError, TorchExport, TorchLm, TorchRnnType, export_core, export_lm};
use rnnlm::{
    Activation, CellKind, DeepLstmConfig, GruConfig, GruFormula, Recurrent, RecurrentCore, RnnLm,
    RnnLmConfig, RnnScratchConfig, WeightInit,
};
use rnnlm_import::{ImportOptions, StateDict, WeightFormat, import_core, import_lm, write_weights};
use rnnlm_tests::{device, ids, max_abs_diff, pattern_tensor, scratch_dir, values};

const FORMATS: [WeightFormat; 2] = [WeightFormat::PyTorch, WeightFormat::Safetensors];

/// The language models exported: every cell, one and two layers, one-hot and embedding input.
fn lm_configs() -> Vec<(&'static str, RnnLmConfig)> {
    let base = |kind| RnnLmConfig::new(kind, 11, 8).with_init(WeightInit::PyTorch);
    vec![
        ("rnn-tanh", base(CellKind::RnnScratch)),
        (
            "rnn-relu-2-embedding",
            base(CellKind::RnnScratch)
                .with_activation(Activation::Relu)
                .with_num_layers(2)
                .with_embedding(5),
        ),
        ("gru", base(CellKind::Gru).with_embedding(6)),
        ("gru-2", base(CellKind::Gru).with_num_layers(2)),
        ("lstm", base(CellKind::Lstm)),
        (
            "lstm-2-embedding",
            base(CellKind::Lstm).with_num_layers(2).with_embedding(7),
        ),
    ]
}

fn tokens(device: &Device) -> Tensor<2, Int> {
    let values: Vec<i64> = (0..3 * 9).map(|i| (i * 7 + 3) % 11).collect();
    ids(&values, [3, 9], device)
}

/// Writes `export` in `format` into `dir` and reads it back as a state dict.
fn through_file<D>(export: &TorchExport<D>, dir: &Path, format: WeightFormat) -> StateDict {
    let path = dir.join(format!("model.{}", format.extension()));
    write_weights(&path, &export.tensors, format).expect("the export writes");
    StateDict::read(&path).expect("the written file reads back")
}

fn import_options(nonlinearity: Option<Activation>) -> ImportOptions {
    ImportOptions {
        nonlinearity: nonlinearity.unwrap_or(Activation::Tanh),
        ..ImportOptions::default()
    }
}

#[test]
fn every_cell_round_trips_through_both_formats() {
    let device = device();
    let dir = scratch_dir("export-lm");
    for (name, config) in lm_configs() {
        let model = config.init(&device);
        let export = export_lm(&model).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (want, _) = model.forward(tokens(&device), None);
        for format in FORMATS {
            let dict = through_file(&export, &dir, format);
            let options = import_options(export.description.rnn.nonlinearity);
            let imported = import_lm(&dict, &options, &device)
                .unwrap_or_else(|e| panic!("{name} ({format:?}): {e}"));
            assert_eq!(imported.config.kind, config.kind, "{name}");
            assert_eq!(imported.config.num_layers, config.num_layers, "{name}");
            assert_eq!(imported.config.encoding, config.encoding, "{name}");
            assert_eq!(
                imported.description,
                export.description.describe_import(),
                "{name}"
            );
            let (got, _) = imported.model.forward(tokens(&device), None);
            let diff = max_abs_diff(got, want.clone());
            assert!(diff <= 1e-6, "{name} ({format:?}): logits differ by {diff}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// What `import_lm` calls the model it recognises, from the export's description.
trait DescribeImport {
    fn describe_import(&self) -> String;
}

impl DescribeImport for TorchLm {
    fn describe_import(&self) -> String {
        let layers = match self.rnn.num_layers {
            1 => String::new(),
            n => format!("{n}-layer "),
        };
        let embedding = self
            .embedding
            .as_ref()
            .map(|e| format!("nn.Embedding({}, {}) + ", e.num_embeddings, e.embedding_dim))
            .unwrap_or_default();
        format!(
            "{embedding}{layers}{}({}, {}) + nn.Linear({}, {})",
            self.rnn.module_type.class_name(),
            self.rnn.input_size,
            self.rnn.hidden_size,
            self.linear.in_features,
            self.linear.out_features
        )
    }
}

/// Bidirectional cores (and cores without biases) export alone and import back alone.
#[test]
fn cores_round_trip_bidirectional_and_without_bias() {
    let device = device();
    let dir = scratch_dir("export-core");
    let (input, hidden) = (5, 4);
    let cores: Vec<(&str, RecurrentCore, Option<Activation>)> = vec![
        (
            "rnn-relu-bi-2",
            RecurrentCore::RnnScratch(
                RnnScratchConfig::new(input, hidden)
                    .with_num_layers(2)
                    .with_bidirectional(true)
                    .with_activation(Activation::Relu)
                    .with_init(WeightInit::PyTorch)
                    .init(&device),
            ),
            Some(Activation::Relu),
        ),
        (
            "gru-bi-2",
            RecurrentCore::Gru(
                GruConfig::new(input, hidden)
                    .with_num_layers(2)
                    .with_bidirectional(true)
                    .init(&device),
            ),
            None,
        ),
        (
            "lstm-bi",
            RecurrentCore::Lstm(
                DeepLstmConfig::new(input, hidden)
                    .with_bidirectional(true)
                    .init(&device),
            ),
            None,
        ),
        (
            "lstm-2-no-bias",
            RecurrentCore::Lstm(
                DeepLstmConfig::new(input, hidden)
                    .with_num_layers(2)
                    .with_bias(false)
                    .init(&device),
            ),
            None,
        ),
        (
            "gru-no-bias",
            RecurrentCore::Gru(GruConfig::new(input, hidden).with_bias(false).init(&device)),
            None,
        ),
    ];
    let x: Tensor<3> = pattern_tensor([2, 6, input], 3, 1.0, &device);
    for (name, core, nonlinearity) in cores {
        let export = export_core(&core, "").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            export.description.bidirectional,
            core.bidirectional(),
            "{name}"
        );
        let has_bias = export
            .tensors
            .iter()
            .any(|(key, _)| key.starts_with("bias_"));
        assert_eq!(has_bias, export.description.bias, "{name}");
        let (want, want_state) = core.forward(x.clone(), None);
        for format in FORMATS {
            let dict = through_file(&export, &dir, format);
            let imported = import_core(&dict, &import_options(nonlinearity), &device)
                .unwrap_or_else(|e| panic!("{name} ({format:?}): {e}"));
            let (got, state) = imported.core.forward(x.clone(), None);
            let diff = max_abs_diff(got, want.clone());
            assert!(
                diff <= 1e-6,
                "{name} ({format:?}): outputs differ by {diff}"
            );
            let diff = max_abs_diff(state.hidden, want_state.hidden.clone());
            assert!(
                diff <= 1e-6,
                "{name} ({format:?}): final states differ by {diff}"
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn keys_are_pytorchs_in_its_order() {
    let device = device();
    let model = RnnLmConfig::new(CellKind::Gru, 10, 4)
        .with_num_layers(2)
        .with_embedding(6)
        .init(&device);
    let export = export_lm(&model).unwrap();
    let got: Vec<(String, Vec<usize>)> = export
        .tensors
        .iter()
        .map(|(key, data)| (key.clone(), data.shape().to_vec()))
        .collect();
    let want: Vec<(String, Vec<usize>)> = [
        ("embedding.weight", vec![10, 6]),
        ("rnn.weight_ih_l0", vec![12, 6]),
        ("rnn.weight_hh_l0", vec![12, 4]),
        ("rnn.bias_ih_l0", vec![12]),
        ("rnn.bias_hh_l0", vec![12]),
        ("rnn.weight_ih_l1", vec![12, 4]),
        ("rnn.weight_hh_l1", vec![12, 4]),
        ("rnn.bias_ih_l1", vec![12]),
        ("rnn.bias_hh_l1", vec![12]),
        ("linear.weight", vec![10, 4]),
        ("linear.bias", vec![10]),
    ]
    .into_iter()
    .map(|(key, shape)| (key.to_owned(), shape))
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        export.description.describe(),
        "nn.Embedding(10, 6) + nn.GRU(6, 4, num_layers=2, batch_first=True) + nn.Linear(4, 10)"
    );

    let bi = RecurrentCore::RnnScratch(
        RnnScratchConfig::new(3, 2)
            .with_num_layers(2)
            .with_bidirectional(true)
            .init(&device),
    );
    let keys: Vec<String> = export_core(&bi, "encoder.")
        .unwrap()
        .tensors
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let suffixes = ["_l0", "_l0_reverse", "_l1", "_l1_reverse"];
    let want: Vec<String> = suffixes
        .iter()
        .flat_map(|s| {
            ["weight_ih", "weight_hh", "bias_ih", "bias_hh"].map(|n| format!("encoder.{n}{s}"))
        })
        .collect();
    assert_eq!(keys, want);
}

#[test]
fn weights_are_transposed_and_scratch_bias_goes_to_bias_ih() {
    let device = device();
    let model = RnnLmConfig::new(CellKind::RnnScratch, 5, 3)
        .with_init(WeightInit::PyTorch)
        .init(&device);
    let RecurrentCore::RnnScratch(core) = &model.core else {
        unreachable!("built as rnn-scratch")
    };
    let layer = &core.layers[0];
    let w_xh = values(layer.w_xh.val()); // [5, 3]
    let b_h = values(layer.b_h.as_ref().expect("biases on").val());
    let export = export_lm(&model).unwrap();
    let tensor = |key: &str| {
        let (_, data) = export.tensors.iter().find(|(k, _)| k == key).expect(key);
        data.clone().convert::<f32>().try_to_vec::<f32>().unwrap()
    };
    let w_ih = tensor("rnn.weight_ih_l0"); // [3, 5]
    for r in 0..5 {
        for c in 0..3 {
            assert_eq!(w_ih[c * 5 + r], w_xh[r * 3 + c]);
        }
    }
    assert_eq!(tensor("rnn.bias_ih_l0"), b_h);
    assert_eq!(tensor("rnn.bias_hh_l0"), vec![0.0; 3]);
    let w_hq = values(model.output.w_hq.val()); // [3, 5]
    let linear = tensor("linear.weight"); // [5, 3]
    // linear[row 2, column 1] of [5, 3] is w_hq[row 1, column 2] of [3, 5].
    assert_eq!(linear[2 * 3 + 1], w_hq[5 + 2]);
}

#[test]
fn description_serialises_as_pytorch_names() {
    let device = device();
    let model = RnnLmConfig::new(CellKind::RnnScratch, 7, 4)
        .with_activation(Activation::Relu)
        .init(&device);
    let description = export_lm(&model).unwrap().description;
    let json = serde_json::to_value(&description).unwrap();
    assert_eq!(json["rnn"]["type"], "RNN");
    assert_eq!(json["rnn"]["nonlinearity"], "relu");
    assert_eq!(json["rnn"]["batch_first"], true);
    assert_eq!(json["input"], "one-hot");
    assert_eq!(json["linear"]["out_features"], 7);
    assert!(json.get("embedding").is_none());
    let back: TorchLm = serde_json::from_value(json).unwrap();
    assert_eq!(back, description);

    let lstm = RnnLmConfig::new(CellKind::Lstm, 7, 4)
        .with_embedding(3)
        .init(&device);
    let json = serde_json::to_value(export_lm(&lstm).unwrap().description).unwrap();
    assert_eq!(json["rnn"]["type"], "LSTM");
    assert!(json["rnn"].get("nonlinearity").is_none());
    assert_eq!(json["embedding"]["embedding_dim"], 3);
    assert_eq!(json["input"], "embedding");
}

#[test]
fn what_pytorch_cannot_compute_is_refused() {
    let device = device();
    let d2l = RnnLmConfig::new(CellKind::Gru, 6, 4)
        .with_gru_formula(GruFormula::D2l)
        .init(&device);
    let err = export_lm(&d2l).unwrap_err();
    assert_eq!(err, ExportError::GruFormula { layer: 0 });
    assert!(
        err.to_string().contains("gru_formula = \"pytorch\""),
        "{err}"
    );

    let coupled = DeepLstmConfig::new(3, 4)
        .with_num_layers(2)
        .with_input_forget(true)
        .init(&device);
    let err = export_core(&RecurrentCore::Lstm(coupled), "").unwrap_err();
    assert_eq!(err, ExportError::InputForget { layer: 0 });
    assert!(err.to_string().contains("input_forget = false"), "{err}");

    let clipped = GruConfig::new(3, 4).with_clip(Some(2.0)).init(&device);
    let err = export_core(&RecurrentCore::Gru(clipped), "").unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Clip {
                layer: 0,
                clip: 2.0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("clip = None"), "{err}");
    let clipped = RnnScratchConfig::new(3, 4)
        .with_clip(Some(1.0))
        .init(&device);
    assert!(matches!(
        export_core(&RecurrentCore::RnnScratch(clipped), ""),
        Err(ExportError::Clip { .. })
    ));

    let reversed = DeepLstmConfig::new(3, 4).with_reverse(true).init(&device);
    let err = export_core(&RecurrentCore::Lstm(reversed), "").unwrap_err();
    assert!(matches!(err, ExportError::Reverse { .. }), "{err}");
    assert!(err.to_string().contains("reverse = false"), "{err}");
}

#[test]
fn inconsistent_models_are_refused_not_panicked_on() {
    let device = device();
    // A bidirectional core inside a language model (only buildable by hand).
    let mut model = RnnLmConfig::new(CellKind::Lstm, 6, 4).init(&device);
    model.core = RecurrentCore::Lstm(
        DeepLstmConfig::new(6, 4)
            .with_bidirectional(true)
            .init(&device),
    );
    assert!(matches!(
        export_lm(&model),
        Err(ExportError::BidirectionalLm { .. })
    ));

    // An output layer whose width disagrees with the vocabulary.
    let mut model: RnnLm = RnnLmConfig::new(CellKind::Gru, 6, 4).init(&device);
    model.output.b_q = Param::from_tensor(Tensor::zeros([5], &device));
    let err = export_lm(&model).unwrap_err();
    assert_eq!(
        err,
        ExportError::Shape {
            tensor: "linear.bias".to_owned(),
            found: vec![5],
            expected: vec![6],
        }
    );

    // Layers with different activations: nn.RNN has one.
    let mut rnn = RnnScratchConfig::new(3, 4).with_num_layers(2).init(&device);
    rnn.layers[1].activation = Activation::Relu;
    assert!(matches!(
        export_core(&RecurrentCore::RnnScratch(rnn), ""),
        Err(ExportError::MixedActivation { layer: 1, .. })
    ));
}

#[test]
fn dropout_and_layout_are_described() {
    let device = device();
    let mut core = GruConfig::new(3, 4)
        .with_num_layers(2)
        .with_batch_first(false)
        .init(&device);
    core.dropout = DropoutConfig::new(0.25).init();
    let description = export_core(&RecurrentCore::Gru(core), "")
        .unwrap()
        .description;
    assert_eq!(description.module_type, TorchRnnType::Gru);
    assert_eq!(description.dropout, 0.25);
    assert!(!description.batch_first);
    assert_eq!(description.describe(), "nn.GRU(3, 4, num_layers=2)");
}
