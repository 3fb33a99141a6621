//! Switching from burn-nn on a trained model, as a user does: burn-nn layers built and trained
//! on an autodiff device, their configs turned into a core's (`from_burn_nn`), their weights
//! loaded (`load_burn_nn`, one- and two-direction layers), then the same outputs, states and
//! gradients as burn-nn's own layers on the same input, and the same Adam step; for every
//! option burn-nn has (`bias = false`, `clip`, `input_forget`, `reverse`, `batch_first =
//! false`), on the fused and the composite path. Then finite differences through the options
//! the fused operation runs, and the refusals that name a layer, a field and both values.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::activation::ActivationConfig;
use burn::nn::{self, GateController};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Gradients;
use rnnlm::fused::{Mode, with_mode};
use rnnlm::{DeepLstmConfig, GruConfig, Recurrent, RnnScratchConfig};
use rnnlm_tests::{Nudge, device, fill_gate as fill, pattern_tensor as tensor, values};

const BATCH: usize = 3;
const STEPS: usize = 5;
const INPUT: usize = 6;
const HIDDEN: usize = 7;

/// Every parameter of a module, in module order, flattened.
fn flat<M: Module>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(values(p.val()));
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// Whether every parameter of a module is tracked by autodiff.
fn all_tracked<M: Module>(module: &M) -> bool {
    struct Check(bool);
    impl ModuleVisitor for Check {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0 &= p.val().is_require_grad();
        }
    }
    let mut check = Check(true);
    module.visit(&mut check);
    check.0
}

/// The module with every parameter replaced by its gradient (on the inner device), so that a
/// burn-nn stack of gradients loads into a core like weights do: the loader's packing, which
/// the forward tests prove, lays burn-nn's gradients out as the core's.
struct ToGrad<'a>(&'a Gradients);

impl ModuleMapper for ToGrad<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let grad = param
            .val()
            .grad(self.0)
            .expect("every parameter has a gradient");
        Param::initialized(param.id, grad)
    }
}

fn fill_lstm(lstm: &mut nn::Lstm, salt: usize, dev: &Device) {
    fill(&mut lstm.input_gate, salt, dev);
    if let Some(forget) = lstm.forget_gate.as_mut() {
        fill(forget, salt + 1, dev);
    }
    fill(&mut lstm.cell_gate, salt + 2, dev);
    fill(&mut lstm.output_gate, salt + 3, dev);
}

fn fill_gru(gru: &mut nn::Gru, salt: usize, dev: &Device) {
    fill(&mut gru.reset_gate, salt, dev);
    fill(&mut gru.update_gate, salt + 1, dev);
    fill(&mut gru.new_gate, salt + 2, dev);
}

/// What a stack gave: the top layer's outputs, and every layer's (and direction's) final `h`
/// (and `c`), `[batch, hidden]` each, in PyTorch's order.
struct Run {
    outputs: Tensor<3>,
    hidden: Vec<Tensor<2>>,
    cell: Option<Vec<Tensor<2>>>,
}

impl Run {
    fn of_core(core: &impl Recurrent, x: Tensor<3>) -> Run {
        let (outputs, state) = core.forward(x, None);
        let split = |t: Tensor<3>| -> Vec<Tensor<2>> {
            t.iter_dim(0).map(|layer| layer.squeeze_dim(0)).collect()
        };
        Run {
            outputs,
            hidden: split(state.hidden),
            cell: state.cell.map(split),
        }
    }

    /// A scalar that depends on every output and final state, with weights that differ per
    /// entry, so that every gradient is exercised.
    fn loss(&self) -> Tensor<1> {
        let dev = self.outputs.device();
        let mut loss = (self.outputs.clone() * tensor(self.outputs.dims(), 50, 1.0, &dev)).sum();
        let states = self.hidden.iter().chain(self.cell.iter().flatten());
        for (k, state) in states.enumerate() {
            loss = loss + (state.clone() * tensor(state.dims(), 60 + k, 1.0, &dev)).sum();
        }
        loss
    }

    fn assert_close(&self, want: &Run, what: &str) {
        let close = |name: String, got: Vec<f32>, want: Vec<f32>| {
            let diff = rnnlm_tests::max_diff(&got, &want);
            assert!(diff <= 1e-5, "{what}: {name}: max difference {diff}");
        };
        close(
            "outputs".into(),
            values(self.outputs.clone()),
            values(want.outputs.clone()),
        );
        assert_eq!(
            self.hidden.len(),
            want.hidden.len(),
            "{what}: state entries"
        );
        for (k, (got, want)) in self.hidden.iter().zip(&want.hidden).enumerate() {
            close(
                format!("h of entry {k}"),
                values(got.clone()),
                values(want.clone()),
            );
        }
        match (&self.cell, &want.cell) {
            (Some(got), Some(want)) => {
                for (k, (got, want)) in got.iter().zip(want).enumerate() {
                    close(
                        format!("c of entry {k}"),
                        values(got.clone()),
                        values(want.clone()),
                    );
                }
            }
            (None, None) => {}
            _ => panic!("{what}: a cell on one side only"),
        }
    }
}

/// One kind of burn-nn stack and the core it becomes.
trait Switch {
    /// The burn-nn stack: one module per layer.
    type Layer: Module + Clone + std::fmt::Debug;
    /// The rnnlm core.
    type Core: Recurrent + Module + Clone + std::fmt::Debug;
    /// Whether the layers read `[batch, steps, ..]`.
    fn batch_first(&self) -> bool;
    /// Whether the core keeps one bias where burn-nn has two that always appear summed.
    fn sums_biases(&self) -> bool;
    fn build(&self, layers: usize, dev: &Device) -> Vec<Self::Layer>;
    fn run(&self, stack: &[Self::Layer], x: Tensor<3>) -> Run;
    /// The core from the stack's configs, with the stack's weights.
    fn core(&self, layers: usize, stack: &[Self::Layer], dev: &Device) -> Self::Core;
    /// The core back as burn-nn layers (`to_burn_nn`).
    fn back(&self, core: &Self::Core) -> Vec<Self::Layer>;
    /// A gradient stack whose second bias is zero where the core sums the two: the core's
    /// one bias then gets the gradient of one of them (both have the same).
    fn without_hidden_bias_grads(&self, stack: Vec<Self::Layer>) -> Vec<Self::Layer>;
}

fn zero_hidden_bias(gate: &mut GateController) {
    if let Some(bias) = gate.hidden_transform.bias.take() {
        gate.hidden_transform.bias = Some(bias.map(|b| b.zeros_like()));
    }
}

fn layer_input(index: usize, directions: usize) -> usize {
    if index == 0 {
        INPUT
    } else {
        directions * HIDDEN
    }
}

/// A burn-nn config that a stack repeats layer after layer, each reading the outputs of the one
/// below (`DIRECTIONS`·hidden of them).
trait Chained: Clone {
    const DIRECTIONS: usize;
    fn with_input(&self, d_input: usize) -> Self;
}

macro_rules! chained {
    ($($config:ty => $directions:expr),* $(,)?) => {
        $(impl Chained for $config {
            const DIRECTIONS: usize = $directions;
            fn with_input(&self, d_input: usize) -> Self {
                let mut config = self.clone();
                config.d_input = d_input;
                config
            }
        })*
    };
}

chained!(
    nn::LstmConfig => 1, nn::BiLstmConfig => 2,
    nn::GruConfig => 1, nn::BiGruConfig => 2,
    nn::RnnConfig => 1, nn::BiRnnConfig => 2,
);

/// `layers` configs like `first`, the inputs of each the outputs of the one below.
fn chain<C: Chained>(first: &C, layers: usize) -> Vec<C> {
    (0..layers)
        .map(|index| first.with_input(layer_input(index, C::DIRECTIONS)))
        .collect()
}

/// Both sides' forward passes, gradients and (where the biases are the same parameters) one
/// Adam step, on an autodiff device, fused and composite.
fn check<S: Switch>(switch: &S, what: &str) {
    let ad = device().autodiff();
    let plain = device();
    for layers in [1, 2] {
        let stack = switch.build(layers, &ad);
        let shape = if switch.batch_first() {
            [BATCH, STEPS, INPUT]
        } else {
            [STEPS, BATCH, INPUT]
        };
        let x = || tensor(shape, 99, 1.0, &ad);
        let want = switch.run(&stack, x());
        let nn_grads = want.loss().backward();
        let nn_grad_stack: Vec<S::Layer> = stack.clone().map(&mut ToGrad(&nn_grads));
        let nn_grad_stack = if switch.sums_biases() {
            switch.without_hidden_bias_grads(nn_grad_stack)
        } else {
            nn_grad_stack
        };
        // burn-nn's gradients in the core's layout, through a core on the plain device.
        let want_grads = flat(&switch.core(layers, &nn_grad_stack, &plain));

        let core = switch.core(layers, &stack, &ad);
        assert!(
            all_tracked(&core),
            "{what}: the loaded core's parameters are tracked"
        );
        // And back: the core as burn-nn layers computes what the stack did, trainable.
        let back = switch.back(&core);
        assert!(
            all_tracked(&back),
            "{what}: to_burn_nn's parameters are tracked"
        );
        switch
            .run(&back, x())
            .assert_close(&want, &format!("{what}, to_burn_nn"));
        for mode in [Mode::Fused, Mode::Composite] {
            let what = format!("{what}, {layers} layers, {mode:?}");
            let got = with_mode(mode, || Run::of_core(&core, x()));
            got.assert_close(&want, &what);
            let grads = got.loss().backward();
            let got_grads = flat(&core.clone().map(&mut ToGrad(&grads)));
            let diff = rnnlm_tests::max_diff(&got_grads, &want_grads);
            let largest = want_grads.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            assert!(
                diff <= 1e-5 * largest.max(1.0),
                "{what}: gradients differ by {diff}"
            );
            assert!(
                largest > 1e-2,
                "{what}: gradients too small to prove anything"
            );

            if switch.sums_biases() {
                continue;
            }
            // One Adam step on each side from the same weights and gradients: the same weights.
            let adam = AdamConfig::new();
            let nn_stepped = adam.init().step(
                1e-2,
                stack.clone(),
                GradientsParams::from_grads(switch.run(&stack, x()).loss().backward(), &stack),
            );
            let core_stepped = adam.init().step(
                1e-2,
                core.clone(),
                GradientsParams::from_grads(
                    with_mode(mode, || Run::of_core(&core, x()))
                        .loss()
                        .backward(),
                    &core,
                ),
            );
            let want_weights = flat(&switch.core(layers, &nn_stepped.valid(), &plain));
            let diff = rnnlm_tests::max_diff(&flat(&core_stepped), &want_weights);
            assert!(
                diff <= 1e-5,
                "{what}: weights after one Adam step differ by {diff}"
            );
        }
    }
}

struct Lstms(nn::LstmConfig);

impl Switch for Lstms {
    type Layer = nn::Lstm;
    type Core = rnnlm::DeepLstm;
    fn batch_first(&self) -> bool {
        self.0.batch_first
    }
    fn sums_biases(&self) -> bool {
        false
    }
    fn build(&self, layers: usize, dev: &Device) -> Vec<nn::Lstm> {
        let mut stack: Vec<nn::Lstm> = chain(&self.0, layers).iter().map(|c| c.init(dev)).collect();
        for (index, layer) in stack.iter_mut().enumerate() {
            fill_lstm(layer, index * 10, dev);
        }
        // A few Adam steps first: the weights a user moves are trained ones.
        train_a_little(
            stack,
            |stack, x| self.run(stack, x),
            self.batch_first(),
            dev,
        )
    }
    fn run(&self, stack: &[nn::Lstm], mut x: Tensor<3>) -> Run {
        let (mut hidden, mut cell) = (Vec::new(), Vec::new());
        for layer in stack {
            let (outputs, state) = layer.forward(x, None);
            hidden.push(state.hidden);
            cell.push(state.cell);
            x = outputs;
        }
        Run {
            outputs: x,
            hidden,
            cell: Some(cell),
        }
    }
    fn core(&self, layers: usize, stack: &[nn::Lstm], dev: &Device) -> rnnlm::DeepLstm {
        DeepLstmConfig::from_burn_nn(&chain(&self.0, layers))
            .expect("burn-nn's config has an rnnlm counterpart")
            .init(dev)
            .load_burn_nn(stack)
            .expect("the stack fits the core")
    }
    fn back(&self, core: &Self::Core) -> Vec<nn::Lstm> {
        core.to_burn_nn()
            .expect("the core has a burn-nn counterpart")
    }
    fn without_hidden_bias_grads(&self, stack: Vec<nn::Lstm>) -> Vec<nn::Lstm> {
        stack
    }
}

/// Two Adam steps on the stack, so the weights loaded are an optimizer's results.
fn train_a_little<L: Module + Clone>(
    mut stack: Vec<L>,
    run: impl Fn(&[L], Tensor<3>) -> Run,
    batch_first: bool,
    dev: &Device,
) -> Vec<L> {
    let shape = if batch_first {
        [BATCH, STEPS, INPUT]
    } else {
        [STEPS, BATCH, INPUT]
    };
    let mut adam = AdamConfig::new().init();
    for step in 0..2 {
        let loss = run(&stack, tensor(shape, 70 + step, 1.0, dev)).loss();
        let grads = GradientsParams::from_grads(loss.backward(), &stack);
        stack = adam.step(1e-2, stack, grads);
    }
    stack
}

struct BiLstms(nn::BiLstmConfig);

impl Switch for BiLstms {
    type Layer = nn::BiLstm;
    type Core = rnnlm::DeepLstm;
    fn batch_first(&self) -> bool {
        self.0.batch_first
    }
    fn sums_biases(&self) -> bool {
        false
    }
    fn build(&self, layers: usize, dev: &Device) -> Vec<nn::BiLstm> {
        let mut stack: Vec<nn::BiLstm> =
            chain(&self.0, layers).iter().map(|c| c.init(dev)).collect();
        for (index, layer) in stack.iter_mut().enumerate() {
            fill_lstm(&mut layer.forward, index * 10, dev);
            fill_lstm(&mut layer.reverse, index * 10 + 5, dev);
        }
        train_a_little(
            stack,
            |stack, x| self.run(stack, x),
            self.batch_first(),
            dev,
        )
    }
    fn run(&self, stack: &[nn::BiLstm], mut x: Tensor<3>) -> Run {
        let (mut hidden, mut cell) = (Vec::new(), Vec::new());
        for layer in stack {
            let (outputs, state) = layer.forward(x, None);
            hidden.extend(state.hidden.iter_dim(0).map(|t| t.squeeze_dim(0)));
            cell.extend(state.cell.iter_dim(0).map(|t| t.squeeze_dim(0)));
            x = outputs;
        }
        Run {
            outputs: x,
            hidden,
            cell: Some(cell),
        }
    }
    fn core(&self, layers: usize, stack: &[nn::BiLstm], dev: &Device) -> rnnlm::DeepLstm {
        DeepLstmConfig::from_burn_nn(&chain(&self.0, layers))
            .expect("burn-nn's config has an rnnlm counterpart")
            .init(dev)
            .load_burn_nn(stack)
            .expect("the stack fits the core")
    }
    fn back(&self, core: &Self::Core) -> Vec<nn::BiLstm> {
        core.to_burn_nn()
            .expect("the core has a burn-nn counterpart")
    }
    fn without_hidden_bias_grads(&self, stack: Vec<nn::BiLstm>) -> Vec<nn::BiLstm> {
        stack
    }
}

struct Grus(nn::GruConfig);

impl Switch for Grus {
    type Layer = nn::Gru;
    type Core = rnnlm::Gru;
    fn batch_first(&self) -> bool {
        true
    }
    fn sums_biases(&self) -> bool {
        !self.0.reset_after
    }
    fn build(&self, layers: usize, dev: &Device) -> Vec<nn::Gru> {
        let mut stack: Vec<nn::Gru> = chain(&self.0, layers).iter().map(|c| c.init(dev)).collect();
        for (index, layer) in stack.iter_mut().enumerate() {
            fill_gru(layer, index * 10, dev);
        }
        train_a_little(stack, |stack, x| self.run(stack, x), true, dev)
    }
    fn run(&self, stack: &[nn::Gru], mut x: Tensor<3>) -> Run {
        let mut hidden = Vec::new();
        for layer in stack {
            // burn-nn's GRU returns its outputs only: the final state is the last step's.
            x = layer.forward(x, None);
            hidden.push(x.clone().narrow(1, STEPS - 1, 1).squeeze_dim(1));
        }
        Run {
            outputs: x,
            hidden,
            cell: None,
        }
    }
    fn core(&self, layers: usize, stack: &[nn::Gru], dev: &Device) -> rnnlm::Gru {
        GruConfig::from_burn_nn(&chain(&self.0, layers))
            .expect("burn-nn's config has an rnnlm counterpart")
            .init(dev)
            .load_burn_nn(stack)
            .expect("the stack fits the core")
    }
    fn back(&self, core: &Self::Core) -> Vec<nn::Gru> {
        core.to_burn_nn()
            .expect("the core has a burn-nn counterpart")
    }
    fn without_hidden_bias_grads(&self, mut stack: Vec<nn::Gru>) -> Vec<nn::Gru> {
        for layer in &mut stack {
            for gate in [
                &mut layer.reset_gate,
                &mut layer.update_gate,
                &mut layer.new_gate,
            ] {
                zero_hidden_bias(gate);
            }
        }
        stack
    }
}

struct BiGrus(nn::BiGruConfig);

impl Switch for BiGrus {
    type Layer = nn::BiGru;
    type Core = rnnlm::Gru;
    fn batch_first(&self) -> bool {
        self.0.batch_first
    }
    fn sums_biases(&self) -> bool {
        !self.0.reset_after
    }
    fn build(&self, layers: usize, dev: &Device) -> Vec<nn::BiGru> {
        let mut stack: Vec<nn::BiGru> =
            chain(&self.0, layers).iter().map(|c| c.init(dev)).collect();
        for (index, layer) in stack.iter_mut().enumerate() {
            fill_gru(&mut layer.forward, index * 10, dev);
            fill_gru(&mut layer.reverse, index * 10 + 5, dev);
        }
        train_a_little(
            stack,
            |stack, x| self.run(stack, x),
            self.batch_first(),
            dev,
        )
    }
    fn run(&self, stack: &[nn::BiGru], mut x: Tensor<3>) -> Run {
        let mut hidden = Vec::new();
        for layer in stack {
            let (outputs, state) = layer.forward(x, None);
            hidden.extend(state.iter_dim(0).map(|t| t.squeeze_dim(0)));
            x = outputs;
        }
        Run {
            outputs: x,
            hidden,
            cell: None,
        }
    }
    fn core(&self, layers: usize, stack: &[nn::BiGru], dev: &Device) -> rnnlm::Gru {
        GruConfig::from_burn_nn(&chain(&self.0, layers))
            .expect("burn-nn's config has an rnnlm counterpart")
            .init(dev)
            .load_burn_nn(stack)
            .expect("the stack fits the core")
    }
    fn back(&self, core: &Self::Core) -> Vec<nn::BiGru> {
        core.to_burn_nn()
            .expect("the core has a burn-nn counterpart")
    }
    fn without_hidden_bias_grads(&self, mut stack: Vec<nn::BiGru>) -> Vec<nn::BiGru> {
        for layer in &mut stack {
            for direction in [&mut layer.forward, &mut layer.reverse] {
                for gate in [
                    &mut direction.reset_gate,
                    &mut direction.update_gate,
                    &mut direction.new_gate,
                ] {
                    zero_hidden_bias(gate);
                }
            }
        }
        stack
    }
}

struct Rnns(nn::RnnConfig);

impl Switch for Rnns {
    type Layer = nn::Rnn;
    type Core = rnnlm::RnnScratch;
    fn batch_first(&self) -> bool {
        self.0.batch_first
    }
    fn sums_biases(&self) -> bool {
        self.0.bias
    }
    fn build(&self, layers: usize, dev: &Device) -> Vec<nn::Rnn> {
        let mut stack: Vec<nn::Rnn> = chain(&self.0, layers).iter().map(|c| c.init(dev)).collect();
        for (index, layer) in stack.iter_mut().enumerate() {
            fill(&mut layer.gate, index * 10, dev);
        }
        train_a_little(
            stack,
            |stack, x| self.run(stack, x),
            self.batch_first(),
            dev,
        )
    }
    fn run(&self, stack: &[nn::Rnn], mut x: Tensor<3>) -> Run {
        let mut hidden = Vec::new();
        for layer in stack {
            let (outputs, state) = layer.forward(x, None);
            hidden.push(state.hidden);
            x = outputs;
        }
        Run {
            outputs: x,
            hidden,
            cell: None,
        }
    }
    fn core(&self, layers: usize, stack: &[nn::Rnn], dev: &Device) -> rnnlm::RnnScratch {
        RnnScratchConfig::from_burn_nn(&chain(&self.0, layers))
            .expect("burn-nn's config has an rnnlm counterpart")
            .init(dev)
            .load_burn_nn(stack)
            .expect("the stack fits the core")
    }
    fn back(&self, core: &Self::Core) -> Vec<nn::Rnn> {
        core.to_burn_nn()
            .expect("the core has a burn-nn counterpart")
    }
    fn without_hidden_bias_grads(&self, mut stack: Vec<nn::Rnn>) -> Vec<nn::Rnn> {
        for layer in &mut stack {
            zero_hidden_bias(&mut layer.gate);
        }
        stack
    }
}

struct BiRnns(nn::BiRnnConfig);

impl Switch for BiRnns {
    type Layer = nn::BiRnn;
    type Core = rnnlm::RnnScratch;
    fn batch_first(&self) -> bool {
        self.0.batch_first
    }
    fn sums_biases(&self) -> bool {
        self.0.bias
    }
    fn build(&self, layers: usize, dev: &Device) -> Vec<nn::BiRnn> {
        let mut stack: Vec<nn::BiRnn> =
            chain(&self.0, layers).iter().map(|c| c.init(dev)).collect();
        for (index, layer) in stack.iter_mut().enumerate() {
            fill(&mut layer.forward.gate, index * 10, dev);
            fill(&mut layer.reverse.gate, index * 10 + 5, dev);
        }
        train_a_little(
            stack,
            |stack, x| self.run(stack, x),
            self.batch_first(),
            dev,
        )
    }
    fn run(&self, stack: &[nn::BiRnn], mut x: Tensor<3>) -> Run {
        let mut hidden = Vec::new();
        for layer in stack {
            let (outputs, state) = layer.forward(x, None);
            hidden.extend(state.hidden.iter_dim(0).map(|t| t.squeeze_dim(0)));
            x = outputs;
        }
        Run {
            outputs: x,
            hidden,
            cell: None,
        }
    }
    fn core(&self, layers: usize, stack: &[nn::BiRnn], dev: &Device) -> rnnlm::RnnScratch {
        RnnScratchConfig::from_burn_nn(&chain(&self.0, layers))
            .expect("burn-nn's config has an rnnlm counterpart")
            .init(dev)
            .load_burn_nn(stack)
            .expect("the stack fits the core")
    }
    fn back(&self, core: &Self::Core) -> Vec<nn::BiRnn> {
        core.to_burn_nn()
            .expect("the core has a burn-nn counterpart")
    }
    fn without_hidden_bias_grads(&self, mut stack: Vec<nn::BiRnn>) -> Vec<nn::BiRnn> {
        for layer in &mut stack {
            zero_hidden_bias(&mut layer.forward.gate);
            zero_hidden_bias(&mut layer.reverse.gate);
        }
        stack
    }
}

#[test]
fn trained_burn_nn_lstms_move_to_deep_lstm_with_every_option() {
    let base = || nn::LstmConfig::new(INPUT, HIDDEN, true);
    check(&Lstms(base()), "Lstm");
    check(
        &Lstms(nn::LstmConfig::new(INPUT, HIDDEN, false)),
        "Lstm, bias = false",
    );
    check(&Lstms(base().with_clip(Some(0.4))), "Lstm, clip 0.4");
    check(&Lstms(base().with_input_forget(true)), "Lstm, input_forget");
    check(&Lstms(base().with_reverse(true)), "Lstm, reverse");
    check(
        &Lstms(base().with_batch_first(false)),
        "Lstm, batch_first = false",
    );
    check(
        &Lstms(
            nn::LstmConfig::new(INPUT, HIDDEN, false)
                .with_input_forget(true)
                .with_reverse(true),
        ),
        "Lstm, bias = false, input_forget, reverse",
    );
}

#[test]
fn trained_burn_nn_bilstms_move_to_a_bidirectional_deep_lstm() {
    let base = || nn::BiLstmConfig::new(INPUT, HIDDEN, true);
    check(&BiLstms(base()), "BiLstm");
    check(
        &BiLstms(base().with_batch_first(false)),
        "BiLstm, batch_first = false",
    );
    check(
        &BiLstms(nn::BiLstmConfig::new(INPUT, HIDDEN, false).with_input_forget(true)),
        "BiLstm, bias = false, input_forget",
    );
    check(&BiLstms(base().with_clip(Some(0.4))), "BiLstm, clip 0.4");
}

#[test]
fn trained_burn_nn_grus_move_to_gru_with_every_option() {
    for reset_after in [true, false] {
        let base = || nn::GruConfig::new(INPUT, HIDDEN, true).with_reset_after(reset_after);
        check(&Grus(base()), &format!("Gru, reset_after {reset_after}"));
        check(
            &Grus(nn::GruConfig::new(INPUT, HIDDEN, false).with_reset_after(reset_after)),
            &format!("Gru, reset_after {reset_after}, bias = false"),
        );
        check(
            &Grus(base().with_clip(Some(0.3))),
            &format!("Gru, reset_after {reset_after}, clip 0.3"),
        );
        check(
            &BiGrus(nn::BiGruConfig::new(INPUT, HIDDEN, true).with_reset_after(reset_after)),
            &format!("BiGru, reset_after {reset_after}"),
        );
    }
    check(
        &BiGrus(nn::BiGruConfig::new(INPUT, HIDDEN, false).with_batch_first(false)),
        "BiGru, bias = false, batch_first = false",
    );
}

#[test]
fn trained_burn_nn_rnns_move_to_rnn_scratch_with_every_option() {
    let base = || nn::RnnConfig::new(INPUT, HIDDEN, true);
    check(&Rnns(base()), "Rnn");
    check(
        &Rnns(base().with_hidden_activation(ActivationConfig::Relu)),
        "Rnn, Relu",
    );
    check(
        &Rnns(nn::RnnConfig::new(INPUT, HIDDEN, false)),
        "Rnn, bias = false",
    );
    check(
        &Rnns(
            base()
                .with_hidden_activation(ActivationConfig::Relu)
                .with_clip(Some(0.5)),
        ),
        "Rnn, Relu, clip 0.5",
    );
    check(
        &Rnns(base().with_reverse(true).with_batch_first(false)),
        "Rnn, reverse, batch_first = false",
    );
    check(&BiRnns(nn::BiRnnConfig::new(INPUT, HIDDEN, true)), "BiRnn");
    check(
        &BiRnns(nn::BiRnnConfig::new(INPUT, HIDDEN, false).with_batch_first(false)),
        "BiRnn, bias = false, batch_first = false",
    );
}

#[test]
fn a_core_on_a_plain_device_loads_layers_from_an_autodiff_one_untracked_and_back() {
    let (ad, plain) = (device().autodiff(), device());
    let stack = Lstms(nn::LstmConfig::new(INPUT, HIDDEN, true)).build(1, &ad);
    let core = DeepLstmConfig::new(INPUT, HIDDEN)
        .init(&plain)
        .load_burn_nn(&stack)
        .unwrap();
    assert!(!core.layers[0].input_weight.val().is_require_grad());
    // The plain core trains once moved to an autodiff device (Burn's `train`), as any module.
    let trained = core.clone().train();
    assert!(all_tracked(&trained));
    // And a core on an autodiff device loads layers that live on a plain one, tracked.
    let plain_stack: Vec<nn::Lstm> = stack.iter().map(|l| l.clone().valid()).collect();
    let tracked = DeepLstmConfig::new(INPUT, HIDDEN)
        .init(&ad)
        .load_burn_nn(&plain_stack)
        .unwrap();
    assert!(all_tracked(&tracked));
    assert_eq!(flat(&tracked), flat(&core));
}

/// Finite differences through the options the fused operation runs (no bias, the coupled gate,
/// reverse): every parameter entry of a two-layer core, on the fused path.
#[test]
fn finite_differences_through_bias_free_coupled_and_reversed_cores() {
    fn check_core<C: Recurrent + Module + Clone>(what: &str, core: C) {
        let ad = device().autodiff();
        let x = |dev: &Device| tensor([2, 4, 3], 7, 1.0, dev);
        let loss = |core: &C, dev: &Device| Run::of_core(core, x(dev)).loss();
        let grads = loss(&core, &ad).backward();
        let analytic = rnnlm_tests::param_grads(&core, &grads);
        let plain = core.valid();
        let dev = device();
        let eps = 5e-3f32;
        let mut checked = 0;
        for (id, grads) in &analytic {
            for (index, &grad) in grads.iter().enumerate() {
                let nudged = |delta| {
                    values(loss(
                        &plain.clone().map(&mut Nudge {
                            id: *id,
                            index,
                            delta,
                        }),
                        &dev,
                    ))[0] as f64
                };
                let numeric = (nudged(eps) - nudged(-eps)) / (2.0 * eps as f64);
                assert!(
                    (grad as f64 - numeric).abs() <= 2e-3 + 2e-2 * numeric.abs(),
                    "{what}: parameter {id} entry {index}: analytic {grad}, finite difference {numeric}"
                );
                checked += 1;
            }
        }
        assert_eq!(
            checked,
            plain.num_params(),
            "{what}: every parameter entry checked"
        );
    }
    let ad = device().autodiff();
    ad.seed(3);
    check_core(
        "DeepLstm, bias = false, input_forget, reverse",
        DeepLstmConfig::new(3, 4)
            .with_num_layers(2)
            .with_bias(false)
            .with_input_forget(true)
            .with_reverse(true)
            .init(&ad),
    );
    check_core(
        "DeepLstm, input_forget, bidirectional",
        DeepLstmConfig::new(3, 4)
            .with_input_forget(true)
            .with_bidirectional(true)
            .init(&ad),
    );
    check_core(
        "Gru, bias = false, reverse",
        GruConfig::new(3, 4)
            .with_num_layers(2)
            .with_bias(false)
            .with_reverse(true)
            .init(&ad),
    );
    check_core(
        "RnnScratch, bias = false, reverse",
        RnnScratchConfig::new(3, 4)
            .with_num_layers(2)
            .with_bias(false)
            .with_reverse(true)
            .with_init(rnnlm::WeightInit::Normal { sigma: 0.5 })
            .init(&ad),
    );
}

fn refused<T: std::fmt::Debug>(result: Result<T, rnnlm::ConfigError>) -> String {
    result.expect_err("the layers do not fit").to_string()
}

#[test]
fn layouts_directions_and_options_that_differ_are_refused_by_layer_field_and_values() {
    let dev = device();
    let lstm = |config: nn::LstmConfig| vec![config.init(&dev)];
    let core = || DeepLstmConfig::new(INPUT, HIDDEN).init(&dev);

    // A time-major burn-nn layer into a batch-first core: named, not loaded.
    let message = refused(core().load_burn_nn(&lstm(
        nn::LstmConfig::new(INPUT, HIDDEN, true).with_batch_first(false),
    )));
    assert!(
        message.contains("batch_first = false")
            && message.contains("build the core with batch_first = false"),
        "{message}"
    );
    let message = refused(core().load_burn_nn(&lstm(
        nn::LstmConfig::new(INPUT, HIDDEN, true).with_reverse(true),
    )));
    assert!(
        message.contains("reverse = true")
            && message.contains("build the core with reverse = true"),
        "{message}"
    );
    let message = refused(core().load_burn_nn(&lstm(nn::LstmConfig::new(INPUT, HIDDEN, false))));
    assert!(
        message.contains("bias = false") && message.contains("bias = false"),
        "{message}"
    );
    let message = refused(core().load_burn_nn(&lstm(
        nn::LstmConfig::new(INPUT, HIDDEN, true).with_input_forget(true),
    )));
    assert!(message.contains("input_forget = true"), "{message}");
    let message = refused(core().load_burn_nn(&lstm(
        nn::LstmConfig::new(INPUT, HIDDEN, true).with_clip(Some(3.0)),
    )));
    assert!(
        message.contains("clip = Some(3.0)") && message.contains("None"),
        "{message}"
    );
    let message = refused(core().load_burn_nn(&lstm(
        nn::LstmConfig::new(INPUT, HIDDEN, true).with_cell_activation(ActivationConfig::Relu),
    )));
    assert!(
        message.contains("cell_activation = \"Relu\"") && message.contains("Tanh"),
        "{message}"
    );

    // Directions: a BiLstm into a one-direction core, and the other way round.
    let bi = vec![nn::BiLstmConfig::new(INPUT, HIDDEN, true).init(&dev)];
    let message = refused(core().load_burn_nn(&bi));
    assert!(
        message.contains("bidirectional = false") && message.contains("BiLstm"),
        "{message}"
    );
    let bi_core = || {
        DeepLstmConfig::new(INPUT, HIDDEN)
            .with_bidirectional(true)
            .init(&dev)
    };
    let message = refused(bi_core().load_burn_nn(&lstm(nn::LstmConfig::new(INPUT, HIDDEN, true))));
    assert!(message.contains("bidirectional = true"), "{message}");
    // A second BiLstm layer reads both directions of the first.
    let two = DeepLstmConfig::new(INPUT, HIDDEN)
        .with_bidirectional(true)
        .with_num_layers(2)
        .init(&dev);
    let wrong = vec![
        nn::BiLstmConfig::new(INPUT, HIDDEN, true).init(&dev),
        nn::BiLstmConfig::new(HIDDEN, HIDDEN, true).init(&dev),
    ];
    let message = refused(two.load_burn_nn(&wrong));
    assert!(
        message.contains("layer 1.forward")
            && message.contains("d_input = 7")
            && message.contains("14"),
        "{message}"
    );

    // Configs: options rnnlm has no counterpart for, and stacks that do not chain.
    let message = refused(DeepLstmConfig::from_burn_nn(&[nn::LstmConfig::new(
        INPUT, HIDDEN, true,
    )
    .with_gate_activation(ActivationConfig::HardSwish)]));
    assert!(
        message.contains("gate_activation = \"HardSwish\"") && message.contains("Sigmoid"),
        "{message}"
    );
    let message = refused(DeepLstmConfig::from_burn_nn(&[
        nn::LstmConfig::new(INPUT, HIDDEN, true),
        nn::LstmConfig::new(INPUT, HIDDEN, true),
    ]));
    assert!(
        message.contains("LstmConfig 1: d_input = 6") && message.contains("7"),
        "{message}"
    );
    let message = refused(DeepLstmConfig::from_burn_nn(&[
        nn::LstmConfig::new(INPUT, HIDDEN, true),
        nn::LstmConfig::new(HIDDEN, HIDDEN, false),
    ]));
    assert!(
        message.contains("LstmConfig 1: bias") && message.contains("true, as in LstmConfig 0"),
        "{message}"
    );
    let message = refused(DeepLstmConfig::from_burn_nn::<nn::LstmConfig>(&[]));
    assert!(message.contains("at least one"), "{message}");
    let message = refused(RnnScratchConfig::from_burn_nn(&[nn::RnnConfig::new(
        INPUT, HIDDEN, true,
    )
    .with_hidden_activation(ActivationConfig::Gelu)]));
    assert!(
        message.contains("hidden_activation = \"Gelu\"") && message.contains("Tanh or Relu"),
        "{message}"
    );
    // reverse with bidirectional, and a clip that is not a positive number.
    let message = refused(
        DeepLstmConfig::new(INPUT, HIDDEN)
            .with_reverse(true)
            .with_bidirectional(true)
            .try_init(&dev),
    );
    assert!(message.contains("reverse = true"), "{message}");
    let message = refused(
        GruConfig::new(INPUT, HIDDEN)
            .with_clip(Some(-1.0))
            .try_init(&dev),
    );
    assert!(message.contains("clip = -1.0"), "{message}");
}
