//! A record saved from a model built on burn-nn's layers, read into the same model built on
//! rnnlm's cores (`rnnlm::burn_nn::load_record`): the same outputs, with the other modules'
//! weights (a `Linear` head) read under their own names; and the mistakes named.

use burn::module::{Module, Param};
use burn::nn::{self, Linear, LinearConfig};
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use rnnlm::burn_nn::{RecordError, StackKeys, load_record};
use rnnlm::{DeepLstm, DeepLstmConfig, Gru, GruConfig, RnnScratch, RnnScratchConfig};
use rnnlm_tests::{device, max_diff, pattern_tensor as tensor, scratch_dir, values};

const BATCH: usize = 2;
const STEPS: usize = 4;
const INPUT: usize = 5;
const HIDDEN: usize = 6;

/// Every parameter of a module away from its initialisation (burn-nn's biases start at zero).
struct Scramble(usize);

impl burn::module::ModuleMapper for Scramble {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.0 += 1;
        let salt = self.0;
        param.map(|t| tensor(t.dims(), salt, 0.5, &t.device()))
    }
}

fn x(dev: &Device) -> Tensor<3> {
    tensor([BATCH, STEPS, INPUT], 3, 1.0, dev)
}

fn save<M: Module>(model: &M, name: &str) -> std::path::PathBuf {
    let path = scratch_dir(&format!("burn-nn-record-{name}")).join("model.bpk");
    model
        .save_into(&mut BurnpackStore::from_file(&path))
        .expect("the record saves");
    path
}

#[derive(Module, Debug)]
struct NnLstmModel {
    lstm: Vec<nn::Lstm>,
    head: Linear,
}

#[derive(Module, Debug)]
struct LstmModel {
    lstm: DeepLstm,
    head: Linear,
}

#[test]
fn a_burn_nn_lstm_models_record_reads_into_the_deep_lstm_model() {
    let dev = device();
    let configs = [
        nn::LstmConfig::new(INPUT, HIDDEN, true),
        nn::LstmConfig::new(HIDDEN, HIDDEN, true),
    ];
    let before = NnLstmModel {
        lstm: configs.iter().map(|c| c.init(&dev)).collect(),
        head: LinearConfig::new(HIDDEN, 3).init(&dev),
    }
    .map(&mut Scramble(0));
    let path = save(&before, "lstm");
    let after = LstmModel {
        lstm: DeepLstmConfig::from_burn_nn(&configs).unwrap().init(&dev),
        head: LinearConfig::new(HIDDEN, 3).init(&dev),
    };
    let after =
        load_record(after, &path, &[StackKeys::vec_field("lstm", 2)]).expect("the record fits");
    // The loaded model holds its weights: the file may go (burn-store reads lazily).
    std::fs::remove_file(&path).unwrap();

    let mut want = x(&dev);
    for layer in &before.lstm {
        want = layer.forward(want, None).0;
    }
    let want = before.head.forward(want);
    let got = after.head.forward(after.lstm.forward(x(&dev), None).0);
    let diff = max_diff(&values(got), &values(want));
    assert!(diff <= 1e-5, "outputs differ by {diff}");
}

#[derive(Module, Debug)]
struct NnBiGruModel {
    gru: Vec<nn::BiGru>,
}

#[derive(Module, Debug)]
struct BiGruModel {
    gru: Gru,
}

#[derive(Module, Debug)]
struct NnRnnModel {
    first: nn::Rnn,
    second: nn::Rnn,
}

#[derive(Module, Debug)]
struct RnnModel {
    rnn: RnnScratch,
}

#[test]
fn bidirectional_layers_one_bias_cores_and_layers_kept_one_per_field_read_too() {
    let dev = device();
    // BiGru with d2l's formula: the core keeps one bias per gate, the sum of burn-nn's two.
    for reset_after in [true, false] {
        let configs = [
            nn::BiGruConfig::new(INPUT, HIDDEN, true).with_reset_after(reset_after),
            nn::BiGruConfig::new(2 * HIDDEN, HIDDEN, true).with_reset_after(reset_after),
        ];
        let before = NnBiGruModel {
            gru: configs.iter().map(|c| c.init(&dev)).collect(),
        }
        .map(&mut Scramble(10));
        let path = save(&before, &format!("bigru-{reset_after}"));
        let after = BiGruModel {
            gru: GruConfig::from_burn_nn(&configs).unwrap().init(&dev),
        };
        let after =
            load_record(after, &path, &[StackKeys::vec_field("gru", 2)]).expect("the record fits");
        let mut want = x(&dev);
        for layer in &before.gru {
            want = layer.forward(want, None).0;
        }
        let diff = max_diff(&values(after.gru.forward(x(&dev), None).0), &values(want));
        assert!(
            diff <= 1e-5,
            "reset_after {reset_after}: outputs differ by {diff}"
        );
    }
    // Two Rnn fields become one two-layer RnnScratch.
    let configs = [
        nn::RnnConfig::new(INPUT, HIDDEN, true),
        nn::RnnConfig::new(HIDDEN, HIDDEN, true),
    ];
    let before = NnRnnModel {
        first: configs[0].init(&dev),
        second: configs[1].init(&dev),
    }
    .map(&mut Scramble(20));
    let path = save(&before, "rnn");
    let after = RnnModel {
        rnn: RnnScratchConfig::from_burn_nn(&configs).unwrap().init(&dev),
    };
    let after = load_record(after, &path, &[StackKeys::new(["first", "second"], "rnn")])
        .expect("the record fits");
    let want = before
        .second
        .forward(before.first.forward(x(&dev), None).0, None)
        .0;
    let diff = max_diff(&values(after.rnn.forward(x(&dev), None).0), &values(want));
    assert!(diff <= 1e-5, "rnn: outputs differ by {diff}");
}

#[test]
fn records_that_do_not_fit_name_the_layer_or_the_tensors() {
    let dev = device();
    let configs = [
        nn::LstmConfig::new(INPUT, HIDDEN, true),
        nn::LstmConfig::new(HIDDEN, HIDDEN, true),
    ];
    let before = NnLstmModel {
        lstm: configs.iter().map(|c| c.init(&dev)).collect(),
        head: LinearConfig::new(HIDDEN, 3).init(&dev),
    };
    let path = save(&before, "lstm-errors");
    let fresh = || LstmModel {
        lstm: DeepLstmConfig::from_burn_nn(&configs).unwrap().init(&dev),
        head: LinearConfig::new(HIDDEN, 3).init(&dev),
    };
    // The layers under another name.
    let error = load_record(fresh(), &path, &[StackKeys::vec_field("rnn", 2)]).unwrap_err();
    assert!(
        matches!(error, RecordError::NoLayer { ref layer, .. } if layer == "rnn.0"),
        "{error}"
    );
    assert!(
        error.to_string().contains("lstm.0.cell_gate"),
        "the message shows what the record holds: {error}"
    );
    // A core with one layer for a stack of two: the second layer's tensors are left over.
    let one = LstmModel {
        lstm: DeepLstmConfig::new(INPUT, HIDDEN).init(&dev),
        head: LinearConfig::new(HIDDEN, 3).init(&dev),
    };
    let error = load_record(one, &path, &[StackKeys::vec_field("lstm", 2)]).unwrap_err();
    match &error {
        RecordError::Apply { unused, .. } => assert!(
            unused.iter().any(|n| n.starts_with("lstm.layers.1")),
            "{error}"
        ),
        other => panic!("expected Apply, got {other}"),
    }
    // No file.
    let error = load_record(
        fresh(),
        "/nonexistent/model.bpk",
        &[StackKeys::vec_field("lstm", 2)],
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/model.bpk"),
        "{error}"
    );
}
