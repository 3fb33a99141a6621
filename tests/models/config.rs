//! The model config: defaults, validation messages, serialisation.

use rnnlm::{Activation, CellKind, GruFormula, InputEncoding, RnnLmConfig, WeightInit};

fn error_of(config: RnnLmConfig) -> String {
    config
        .validate()
        .expect_err("config should be rejected")
        .to_string()
}

#[test]
fn invalid_sizes_name_the_field_and_value() {
    let base = RnnLmConfig::new(CellKind::Lstm, 28, 256);
    assert!(base.validate().is_ok());
    let cases = [
        (
            RnnLmConfig {
                hidden_size: 0,
                ..base.clone()
            },
            "model.hidden_size = 0",
        ),
        (
            RnnLmConfig {
                vocab_size: 0,
                ..base.clone()
            },
            "model.vocab_size = 0",
        ),
        (
            RnnLmConfig {
                num_layers: 0,
                ..base.clone()
            },
            "model.num_layers = 0",
        ),
        (base.clone().with_dropout(1.0), "model.dropout = 1.0"),
        (base.clone().with_dropout(-0.1), "model.dropout = -0.1"),
        (base.clone().with_dropout(f64::NAN), "model.dropout = NaN"),
        (base.clone().with_embedding(0), "model.embedding_dim = 0"),
        (
            base.clone().with_init(WeightInit::Normal { sigma: 0.0 }),
            "model.init.sigma = 0.0",
        ),
        (
            base.clone().with_activation(Activation::Relu),
            "model.activation = Relu",
        ),
        (
            base.clone().with_gru_formula(GruFormula::D2l),
            "model.gru_formula = D2l",
        ),
        (
            RnnLmConfig {
                bidirectional: true,
                ..base.clone()
            },
            "model.bidirectional = true",
        ),
    ];
    for (config, expected) in cases {
        let message = error_of(config);
        assert!(
            message.starts_with(&format!("invalid {expected}:")),
            "{message}"
        );
    }
}

#[test]
fn init_panics_with_the_validation_message() {
    let result = std::panic::catch_unwind(|| {
        RnnLmConfig::new(CellKind::Gru, 28, 0).init(&rnnlm_tests::device())
    });
    let payload = result.expect_err("hidden 0 must not build");
    let message = payload.downcast_ref::<String>().expect("formatted panic");
    assert!(message.contains("model.hidden_size = 0"), "{message}");
}

#[test]
fn toml_table_with_defaults_round_trips() {
    let config: RnnLmConfig = toml::from_str(
        r#"
        kind = "gru"
        vocab_size = 28
        gru_formula = "d2l"
        init = { rule = "normal", sigma = 0.01 }
        "#,
    )
    .unwrap();
    assert_eq!(config.kind, CellKind::Gru);
    assert_eq!(config.hidden_size, 256);
    assert_eq!(config.num_layers, 1);
    assert_eq!(config.encoding, InputEncoding::OneHot);
    assert_eq!(config.gru_formula, GruFormula::D2l);
    assert_eq!(config.init, Some(WeightInit::Normal { sigma: 0.01 }));
    let again: RnnLmConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(again, config);
    // burn's Config (JSON), as a checkpoint stores it.
    let json = burn::config::config_to_json(&config);
    use burn::config::Config;
    assert_eq!(RnnLmConfig::load_binary(json.as_bytes()).unwrap(), config);
}

#[test]
fn unknown_fields_and_kinds_are_rejected() {
    let err = toml::from_str::<RnnLmConfig>("kind = \"lstm\"\nhiden_size = 3").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `hiden_size`"),
        "{err}"
    );
    let err = toml::from_str::<RnnLmConfig>("kind = \"transformer\"").unwrap_err();
    assert!(err.to_string().contains("rnn-scratch"), "{err}");
}

#[test]
fn kinds_have_their_d2l_default_initialisation() {
    assert_eq!(
        CellKind::RnnScratch.default_init(),
        WeightInit::Normal { sigma: 0.01 }
    );
    assert_eq!(
        RnnLmConfig::new(CellKind::Lstm, 2, 2).weight_init(),
        WeightInit::PyTorch
    );
}

/// A language model cannot read ahead: a config asking for bidirectional layers is told why,
/// not that the field is unknown, and a config that does not ask writes no such field.
#[test]
fn a_bidirectional_language_model_is_refused_with_the_reason() {
    let config: RnnLmConfig = toml::from_str(
        r#"
        kind = "lstm"
        vocab_size = 28
        bidirectional = true
        "#,
    )
    .expect("the field parses");
    let message = error_of(config.clone());
    assert!(message.contains("model.bidirectional = true"), "{message}");
    assert!(
        message.contains("would read the very tokens it is asked to predict"),
        "{message}"
    );
    let plain = RnnLmConfig {
        bidirectional: false,
        ..config
    };
    assert!(!toml::to_string(&plain).unwrap().contains("bidirectional"));
}
