use rnnlm_data::{
    Corpus, CorpusOptions, DataError, Preprocess, TokenLevel, Tokenizer, Vocab, encode, read_text,
};
use rnnlm_tests::{scratch_dir, shared_data};

fn time_machine() -> String {
    read_text(&shared_data("timemachine.txt")).unwrap()
}

fn corpus(text: &str, preprocess: Preprocess) -> Corpus {
    let tokenizer = Tokenizer {
        preprocess,
        level: TokenLevel::Char,
    };
    Corpus::build(text, &tokenizer, &CorpusOptions::default(), "test").unwrap()
}

#[test]
fn time_machine_old_d2l_mode() {
    let corpus = corpus(&time_machine(), Preprocess::D2lLines);
    assert_eq!(corpus.vocab.len(), 28);
    assert_eq!(corpus.tokens.len(), 170_580);
    let top: Vec<&str> = (1..=10).map(|i| corpus.vocab.token(i).unwrap()).collect();
    assert_eq!(top, [" ", "e", "t", "a", "i", "n", "o", "s", "h", "r"]);
    assert_eq!(corpus.vocab.token(0), Some("<unk>"));
    // Frequencies are descending after <unk>.
    let freqs: Vec<usize> = (1..28).map(|i| corpus.vocab.frequency(i)).collect();
    assert!(freqs.windows(2).all(|w| w[0] >= w[1]), "{freqs:?}");
}

#[test]
fn time_machine_whole_text_mode() {
    let corpus = corpus(&time_machine(), Preprocess::D2lWhole);
    assert_eq!(corpus.tokens.len(), 173_428);
    assert_eq!(corpus.vocab.len(), 28);
}

#[test]
fn tinyshakespeare_raw_mode() {
    let text = read_text(&shared_data("tinyshakespeare.txt")).unwrap();
    let corpus = corpus(&text, Preprocess::Raw);
    assert_eq!(
        corpus.vocab.len() - 1,
        65,
        "distinct characters besides <unk>"
    );
    assert_eq!(corpus.tokens.len(), 1_115_394);
}

#[test]
fn max_tokens_keeps_the_vocabulary_of_the_whole_text() {
    let tokenizer = Tokenizer::default();
    let options = CorpusOptions {
        max_tokens: Some(10_000),
        ..Default::default()
    };
    let corpus = Corpus::build(&time_machine(), &tokenizer, &options, "tm").unwrap();
    assert_eq!(corpus.tokens.len(), 10_000);
    assert_eq!(corpus.vocab.len(), 28);
}

#[test]
fn d2l_cleaning_by_hand() {
    let lines = Tokenizer {
        preprocess: Preprocess::D2lLines,
        level: TokenLevel::Char,
    };
    let whole = Tokenizer {
        preprocess: Preprocess::D2lWhole,
        level: TokenLevel::Char,
    };
    let text = "The Time-Machine,\r\n by H.G. Wells\n\n1895!";
    // Per line: "the time machine", "by h g wells", "", "" -> joined without separator.
    assert_eq!(
        lines.tokenize(text).concat(),
        "the time machineby h g wells"
    );
    // Whole text: every non-letter run, line breaks included, is one space.
    assert_eq!(
        whole.tokenize(text).concat(),
        "the time machine by h g wells "
    );
    let words = Tokenizer {
        preprocess: Preprocess::D2lLines,
        level: TokenLevel::Word,
    };
    assert_eq!(
        words.tokenize(text),
        ["the", "time", "machine", "by", "h", "g", "wells"]
    );
}

#[test]
fn vocabulary_options_and_round_trip() {
    let tokens = "b a c a b a d".split(' ');
    let vocab = Vocab::build(tokens, 2, &["<pad>", "b"]);
    // <unk>, reserved in order, then by frequency (a: 3; b is reserved; c and d below min_freq).
    assert_eq!(vocab.tokens(), ["<unk>", "<pad>", "b", "a"]);
    assert_eq!(vocab.index_of("c"), 0);
    assert_eq!(vocab.frequency(2), 2);
    // Ties keep the order of first appearance.
    let tied = Vocab::build("x y z y x z".split(' '), 0, &[]);
    assert_eq!(tied.tokens(), ["<unk>", "x", "y", "z"]);

    let full = corpus(&time_machine(), Preprocess::D2lLines).vocab;
    let text = toml::to_string(&full).unwrap();
    let back: Vocab = toml::from_str(&text).unwrap();
    assert_eq!(back, full);
    assert_eq!(back.index_of("e"), 2);
}

#[test]
fn corrupt_vocabulary_files_are_rejected() {
    let err = toml::from_str::<Vocab>("tokens = [\"a\"]\nfrequencies = [1]").unwrap_err();
    assert!(err.to_string().contains("starts with \"<unk>\""), "{err}");
    let err =
        toml::from_str::<Vocab>("tokens = [\"<unk>\", \"a\", \"a\"]\nfrequencies = [0, 1, 1]")
            .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}

#[test]
fn unknown_characters_are_mapped_to_unk_and_counted() {
    let vocab = corpus("abc abc", Preprocess::Raw).vocab;
    let raw = Tokenizer {
        preprocess: Preprocess::Raw,
        level: TokenLevel::Char,
    };
    let (ids, unknown) = encode("abz!z", &raw, &vocab);
    assert_eq!(ids[..2], [vocab.index_of("a"), vocab.index_of("b")]);
    assert_eq!(ids[2..], [0, 0, 0]);
    assert_eq!(unknown, [("z".to_owned(), 2), ("!".to_owned(), 1)]);
}

#[test]
fn split_keeps_the_last_fraction_for_validation() {
    let c = corpus("abcdefghij", Preprocess::Raw);
    let (train, valid) = c.split(0.2).unwrap();
    assert_eq!((train.len(), valid.len()), (8, 2));
    assert_eq!(valid, &c.tokens[8..]);
    assert!(matches!(
        c.split(1.0),
        Err(DataError::Invalid {
            field: "data.valid_fraction",
            ..
        })
    ));
}

#[test]
fn bad_files_give_typed_errors_naming_the_file() {
    let dir = scratch_dir("bad-files");
    let missing = dir.join("missing.txt");
    let err = read_text(&missing).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }));
    assert!(err.to_string().contains("missing.txt"), "{err}");

    assert!(matches!(
        read_text(&dir),
        Err(DataError::IsDirectory { .. })
    ));

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(read_text(&empty), Err(DataError::Empty { .. })));

    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9").unwrap();
    let err = read_text(&latin1).unwrap_err();
    assert!(matches!(err, DataError::NotUtf8 { offset: 3, .. }), "{err}");

    // Text with no letters is empty after d2l's cleaning: say so and point at raw mode.
    let err = Corpus::build(
        "1234 !!",
        &Tokenizer::default(),
        &CorpusOptions::default(),
        "digits.txt",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("digits.txt holds no tokens") && err.to_string().contains("raw"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
