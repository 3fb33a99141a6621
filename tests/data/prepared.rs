//! Prepared token files: the ids, vocabulary and minibatches of every test corpus as the
//! in-memory pipeline before them gave (fingerprints taken with it), streaming cut anywhere,
//! and files that are truncated, stale or foreign.

use rnnlm_data::{
    BatchConfig, CorpusSpec, Preparation, PreparedCorpus, Preprocess, Sampling, SourceFile,
    TokenLevel, Tokenizer, Tokens, epoch_rng,
};
use rnnlm_tests::{scratch_dir, shared_data};
use sha1::{Digest, Sha1};

struct Case {
    name: &'static str,
    train: Vec<&'static str>,
    valid: Vec<&'static str>,
    tokenizer: Tokenizer,
    min_freq: usize,
    max_tokens: Option<usize>,
    valid_fraction: f64,
}

fn tok(preprocess: Preprocess, level: TokenLevel) -> Tokenizer {
    Tokenizer { preprocess, level }
}

fn cases() -> Vec<Case> {
    use Preprocess::*;
    use TokenLevel::*;
    let case = |name,
                train: &[&'static str],
                valid: &[&'static str],
                tokenizer,
                min_freq,
                max_tokens,
                valid_fraction| Case {
        name,
        train: train.to_vec(),
        valid: valid.to_vec(),
        tokenizer,
        min_freq,
        max_tokens,
        valid_fraction,
    };
    let tm = "timemachine.txt";
    let ts = "tinyshakespeare.txt";
    vec![
        case(
            "tm-lines-char",
            &[tm],
            &[],
            tok(D2lLines, Char),
            0,
            None,
            0.0,
        ),
        case(
            "tm-lines-char-valid",
            &[tm],
            &[],
            tok(D2lLines, Char),
            0,
            None,
            0.1,
        ),
        case(
            "tm-whole-char",
            &[tm],
            &[],
            tok(D2lWhole, Char),
            0,
            None,
            0.05,
        ),
        case("tm-raw-char", &[tm], &[], tok(Raw, Char), 0, None, 0.1),
        case(
            "tm-lines-word",
            &[tm],
            &[],
            tok(D2lLines, Word),
            2,
            None,
            0.1,
        ),
        case(
            "tm-raw-word-max",
            &[tm],
            &[],
            tok(Raw, Word),
            3,
            Some(10_000),
            0.1,
        ),
        case(
            "tm-whole-word",
            &[tm],
            &[],
            tok(D2lWhole, Word),
            0,
            None,
            0.0,
        ),
        case("ts-raw-char", &[ts], &[], tok(Raw, Char), 0, None, 0.1),
        case(
            "two-books",
            &[tm, ts],
            &[],
            tok(D2lLines, Char),
            0,
            None,
            0.1,
        ),
        case("valid-file", &[tm], &[ts], tok(Raw, Char), 5, None, 0.3),
        case(
            "max-tokens-two",
            &[ts, tm],
            &[],
            tok(Raw, Char),
            0,
            Some(50_000),
            0.2,
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The prepared corpus of a case, made in a scratch directory.
fn prepare(case: &Case, dir: &std::path::Path) -> PreparedCorpus {
    let files = |names: &[&str]| -> Vec<SourceFile> {
        names
            .iter()
            .map(|f| SourceFile {
                name: f.to_string(),
                path: shared_data(f),
            })
            .collect()
    };
    let spec = CorpusSpec {
        train: files(&case.train),
        valid: files(&case.valid),
        tokenizer: case.tokenizer,
        encoding: "utf-8".to_owned(),
        min_freq: case.min_freq,
        max_tokens: case.max_tokens,
        valid_fraction: case.valid_fraction,
        vocab: None,
    };
    let path = dir.join(spec.file_name().unwrap());
    let (corpus, how) = PreparedCorpus::load_or_prepare(&spec, &path, |_| {}).unwrap();
    assert_eq!(how, Preparation::Built, "{}", case.name);
    corpus
}

/// (vocabulary and shares, training ids, validation ids, sequential epoch 2).
fn fingerprint(corpus: &PreparedCorpus) -> [String; 4] {
    let mut meta = Sha1::new();
    for (i, token) in corpus.vocab.tokens().iter().enumerate() {
        meta.update(token.as_bytes());
        meta.update([0]);
        meta.update((corpus.vocab.frequency(i as u32) as u64).to_le_bytes());
    }
    for share in &corpus.shares {
        meta.update(format!(
            "{}:{}:{}:{};",
            share.name, share.tokens, share.train, share.valid
        ));
    }
    let ids = |ids: &Tokens| {
        let mut h = Sha1::new();
        for id in ids.iter() {
            h.update(id.to_le_bytes());
        }
        hex(&h.finalize())
    };
    let cfg = BatchConfig {
        batch_size: 8,
        num_steps: 20,
        sampling: Sampling::Sequential,
    };
    let mut h = Sha1::new();
    for b in cfg
        .epoch(&corpus.train, &mut epoch_rng(7, 2))
        .unwrap()
        .iter()
    {
        for r in 0..b.batch_size {
            for t in [b.x_row(r), &b.y_row(r)[19..]].concat() {
                h.update(t.to_le_bytes());
            }
        }
    }
    [
        hex(&meta.finalize()),
        ids(&corpus.train),
        ids(&corpus.valid),
        hex(&h.finalize()),
    ]
}

/// Taken with the in-memory `SplitCorpus` this file replaced (main at 4ccc968).
const GOLDEN: &[(&str, [&str; 4])] = &[
    (
        "tm-lines-char",
        [
            "faf6a4b577922848a6dd6297782ef887c161033b",
            "cd283b269b12a6e1effe1ed7522d6de851fc4c5b",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "9d72153210e3a78da62b7e79d908f8ce9fd1da6e",
        ],
    ),
    (
        "tm-lines-char-valid",
        [
            "3a1c5a93ee20e1faf1c2895930c0d9984f98ebb7",
            "6ef3a80d0ed5e09aaf46724553a1c73349163181",
            "237eaeb9f08cff529581d5f7d6386f3634b10a9c",
            "51673666cd9afb830efe2c341156d7561759b602",
        ],
    ),
    (
        "tm-whole-char",
        [
            "adce06345b2f48f9d5518fc72a950971b521d330",
            "89f524fb41a369fe1818108e89fa83e618f44170",
            "b370854f82e8303c6afe0ab4c2f5b5b693001e96",
            "ab4c022b239587741030ac12c936a7ea3bb89024",
        ],
    ),
    (
        "tm-raw-char",
        [
            "5da7fe4e1b17bb64405497ebbc1c53673f8db2c5",
            "33e5ab7011396eca07c153660d55c66624ede049",
            "18f6ae49098ddd3db47aed5b3aa72c607a721a61",
            "90b4d5d71fb060eaf5af4f25d941471838c9e84b",
        ],
    ),
    (
        "tm-lines-word",
        [
            "7e68b5ab14833d99264077ab1df3254c0ccdca46",
            "718d09263ea4b21f348a87654d762bcc6dae8382",
            "9201d931827343a2d3712740b9a34e7a30aa0705",
            "56efcda1f0e99613d563e39d3fcdd19b9bb8ecf3",
        ],
    ),
    (
        "tm-raw-word-max",
        [
            "034ea7f1696f47550b9a088fbb764d823074e466",
            "8c8440fb222478cc2fded3afbedead960814417b",
            "63801418b26336de2c4e3312628b83bbb892ad91",
            "2185d450ad55d33e2e2033b2075480f76910d0c3",
        ],
    ),
    (
        "tm-whole-word",
        [
            "82bfb5df2c79e20146e41f5996763b557f73d358",
            "1f52cac94f559a16ed105e25c3efaa23e49addd3",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "ffc198249caf9fd336614e37708ac11a9ee4d77d",
        ],
    ),
    (
        "ts-raw-char",
        [
            "9f069056ef1e566e858ffa62b6a3d790965b94f6",
            "e971fb69333ff58f5cdbc5139e57f57114f60b18",
            "921b8e372b74ad1d3889c84539c9bd2a371da0a0",
            "4e1d9c686adadc4fdf806a67b9a038b4e49b4662",
        ],
    ),
    (
        "two-books",
        [
            "423939ee3062314d8a9d69b67201ddfb35158366",
            "998a96751c6a73fa7b614a4e7000da3aaeea97d1",
            "dc5a02d76ff3d7af7558beb0a98eb9a0c05b9f8c",
            "df9bbfb3d5abef663a89d6aaee2a573a50cf62f3",
        ],
    ),
    (
        "valid-file",
        [
            "d887e453a6adc82c22a8530457b8cb64f05e5e95",
            "537b98c5270db6ba85f428da8258289103d27019",
            "04352d52aeaf7c0db60249db0d70fca1a80b5668",
            "089a7f91c276cd3fce6b7441f61d685eb1a31ae4",
        ],
    ),
    (
        "max-tokens-two",
        [
            "a3ff6fe34b735f67fb7d8a97a3250d60aefc046b",
            "3a857ae84adda3da65562dc0dea7f7ef1a2c7912",
            "09d425756b3e720e6c3318d44900d290939cd3b9",
            "5641dc2493aec22b8fb5b601a440b5d8c2820b01",
        ],
    ),
];

#[test]
fn every_test_corpus_prepares_to_the_ids_vocabulary_and_minibatches_of_before() {
    let dir = scratch_dir("prepared-golden");
    let cases = cases();
    assert_eq!(cases.len(), GOLDEN.len());
    for (case, (name, golden)) in cases.iter().zip(GOLDEN) {
        assert_eq!(case.name, *name);
        let corpus = prepare(case, &dir);
        assert!(corpus.train.is_mapped());
        assert_eq!(fingerprint(&corpus), golden.map(str::to_owned), "{name}");
    }
}

fn spec_of(files: &[std::path::PathBuf], tokenizer: Tokenizer, encoding: &str) -> CorpusSpec {
    CorpusSpec {
        train: files.iter().map(|p| SourceFile::new(p.clone())).collect(),
        valid: Vec::new(),
        tokenizer,
        encoding: encoding.to_owned(),
        min_freq: 0,
        max_tokens: None,
        valid_fraction: 0.1,
        vocab: None,
    }
}

/// Every cleaning and token level, on text with every line ending, a byte-order mark,
/// non-ASCII letters and words cut by the chunks: the tokens do not depend on where the
/// chunks fall.
#[test]
fn streaming_in_chunks_of_any_size_tokenises_as_the_whole_text_does() {
    use rnnlm_data::{StreamOptions, Token, TokenStream, stream_text};
    let dir = scratch_dir("prepared-chunks");
    let text = "\u{feff}The Time  Traveller (for so it\r\nwill be convenient)\rwas expounding \
                — a recondite matter to us.\n\n  Ünïcode é words, ok?!\n\nend";
    let path = dir.join("t.txt");
    std::fs::write(&path, text).unwrap();
    let whole = rnnlm_data::read_text(&path).unwrap();
    assert!(!whole.starts_with('\u{feff}'), "the mark is no character");
    for preprocess in [Preprocess::D2lLines, Preprocess::D2lWhole, Preprocess::Raw] {
        for level in [TokenLevel::Char, TokenLevel::Word] {
            let tokenizer = tok(preprocess, level);
            let expected = tokenizer.tokenize(&whole);
            for chunk_bytes in 4..=11 {
                let mut got = Vec::new();
                let mut stream = TokenStream::new(tokenizer);
                let mut push = |t: Token<'_>| got.push(t.with_str(str::to_owned));
                let options = StreamOptions {
                    chunk_bytes,
                    sha1: true,
                };
                let streamed = stream_text(&path, "utf-8", options, |piece| {
                    stream.feed(piece, &mut push)
                })
                .unwrap();
                stream.finish(&mut push);
                assert_eq!(
                    got, expected,
                    "{preprocess:?} {level:?} in chunks of {chunk_bytes}"
                );
                assert_eq!(streamed.bytes, text.len() as u64);
                assert_eq!(
                    streamed.sha1.as_deref(),
                    Some(rnnlm_data::sha1_of_file(&path).unwrap().as_str())
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_single_byte_encoding_streams_as_it_reads_and_bad_bytes_are_named_with_their_offset() {
    use rnnlm_data::{DataError, StreamOptions, stream_text};
    let dir = scratch_dir("prepared-encodings");
    // "café née" in windows-1252, long enough to cross chunks.
    let mut bytes = Vec::new();
    for _ in 0..50 {
        bytes.extend_from_slice(b"caf\xe9 n\xe9e, ");
    }
    let latin = dir.join("latin.txt");
    std::fs::write(&latin, &bytes).unwrap();
    let whole = rnnlm_data::read_text_in(&latin, "windows-1252").unwrap();
    assert!(whole.starts_with("café née, "));
    for chunk_bytes in [4, 5, 7, 64] {
        let mut text = String::new();
        stream_text(
            &latin,
            "windows-1252",
            StreamOptions {
                chunk_bytes,
                sha1: false,
            },
            |p| text.push_str(p),
        )
        .unwrap();
        assert_eq!(text, whole, "chunks of {chunk_bytes}");
    }
    // Read as UTF-8, the first é is named.
    let err = stream_text(
        &latin,
        "utf-8",
        StreamOptions {
            chunk_bytes: 5,
            sha1: false,
        },
        |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, DataError::NotUtf8 { offset: 3, .. }), "{err}");
    // A UTF-8 file among windows-1252 corpora is refused as such, wherever its chunks end.
    let utf8 = dir.join("utf8.txt");
    std::fs::write(&utf8, "café née ".repeat(40)).unwrap();
    for chunk_bytes in [4, 5, 64] {
        let err = stream_text(
            &utf8,
            "windows-1252",
            StreamOptions {
                chunk_bytes,
                sha1: false,
            },
            |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, DataError::EncodingMismatch { .. }), "{err}");
    }
    // 0xAA is undefined in windows-1253: its offset is named.
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, b"abcdefgh\xaaij").unwrap();
    let err = stream_text(
        &bad,
        "windows-1253",
        StreamOptions {
            chunk_bytes: 4,
            sha1: false,
        },
        |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, DataError::Malformed { offset: 8, .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ids_take_the_narrowest_width_the_vocabulary_allows() {
    let dir = scratch_dir("prepared-widths");
    let chars = prepare(&cases()[0], &dir);
    assert_eq!(chars.train.width(), rnnlm_data::IdWidth::U8);
    let words = prepare(&cases()[4], &dir);
    assert!(words.vocab.len() > 256);
    assert_eq!(words.train.width(), rnnlm_data::IdWidth::U16);
    // A file's size is its ids, a byte each for characters, plus the header.
    let size = std::fs::metadata(&chars.path).unwrap().len() as usize;
    assert!(
        size >= chars.train.len() && size < chars.train.len() + 4096,
        "{size}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_prepared_file_is_reused_while_its_sources_are_unchanged_and_rebuilt_when_not() {
    let dir = scratch_dir("prepared-stale");
    let source = dir.join("book.txt");
    let book = std::fs::read_to_string(shared_data("timemachine.txt")).unwrap();
    std::fs::write(&source, &book[..20_000]).unwrap();
    let spec = spec_of(std::slice::from_ref(&source), Tokenizer::default(), "utf-8");
    let path = dir.join("book.tokens");
    let load = || PreparedCorpus::load_or_prepare(&spec, &path, |_| {}).unwrap();
    let (first, how) = load();
    assert_eq!(how, Preparation::Built);
    let (again, how) = load();
    assert_eq!(how, Preparation::Reused);
    assert_eq!(again.train, first.train);
    assert_eq!(again.vocab, first.vocab);

    // A new time alone (a touch, a copy) is checked by content: reused.
    let file = std::fs::File::options().append(true).open(&source).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(load().1, Preparation::Reused);

    // The same size, other contents: rebuilt, and the ids follow the text.
    let mut changed = book[..20_000].to_owned().into_bytes();
    changed[100] = b'Z';
    std::fs::write(&source, &changed).unwrap();
    let (rebuilt, how) = load();
    assert!(
        matches!(&how, Preparation::Rebuilt(r) if r.contains("book.txt changed") && r.contains("sha1")),
        "{how:?}"
    );
    assert_ne!(rebuilt.train, first.train);

    // Another size: rebuilt, the sizes named.
    std::fs::write(&source, &book[..25_000]).unwrap();
    assert!(matches!(load().1, Preparation::Rebuilt(r) if r.contains("25000 bytes")));

    // Truncated (a copy cut short): rebuilt, not read past its end.
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    assert!(matches!(load().1, Preparation::Rebuilt(r) if r.contains("truncated")));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);

    // Other options at the same path: refused by open with the field, rebuilt by a run.
    let words = CorpusSpec {
        tokenizer: tok(Preprocess::D2lLines, TokenLevel::Word),
        ..spec.clone()
    };
    match PreparedCorpus::open(&path, &words).unwrap() {
        Err(rnnlm_data::Unusable::Stale(reason)) => {
            assert!(reason.contains("data.level"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let fewer = CorpusSpec {
        min_freq: 3,
        ..spec.clone()
    };
    assert!(
        matches!(PreparedCorpus::open(&path, &fewer).unwrap(), Err(rnnlm_data::Unusable::Stale(r)) if r.contains("data.min_freq"))
    );
    // Options and files give the cache its file name.
    assert_ne!(spec.file_name().unwrap(), words.file_name().unwrap());
    assert_eq!(spec.file_name().unwrap(), spec.clone().file_name().unwrap());

    // A file that is no prepared file is never overwritten.
    let foreign = dir.join("notes.tokens");
    std::fs::write(&foreign, "my notes").unwrap();
    let err = PreparedCorpus::load_or_prepare(&spec, &foreign, |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("is not a prepared token file"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "my notes");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_failed_write_leaves_no_partial_file_and_empty_texts_are_named() {
    let dir = scratch_dir("prepared-failures");
    let source = dir.join("book.txt");
    std::fs::write(&source, "the time traveller ".repeat(100)).unwrap();
    let spec = spec_of(std::slice::from_ref(&source), Tokenizer::default(), "utf-8");
    // A directory where the file should go: the rename fails after the ids were written.
    let blocked = dir.join("blocked.tokens");
    std::fs::create_dir_all(blocked.join("inside")).unwrap();
    let err = PreparedCorpus::prepare(&spec, &blocked, |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("cannot write the prepared tokens")
            && err.to_string().contains("nothing was kept"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter().all(|n| !n.to_string_lossy().contains(".part-")),
        "{left:?}"
    );

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = PreparedCorpus::prepare(
        &spec_of(
            &[source.clone(), empty.clone()],
            Tokenizer::default(),
            "utf-8",
        ),
        &dir.join("x.tokens"),
        |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("empty.txt holds no tokens"),
        "{err}"
    );
    let symbols = dir.join("symbols.txt");
    std::fs::write(&symbols, "123 !!! ---").unwrap();
    let err = PreparedCorpus::prepare(
        &spec_of(&[symbols], Tokenizer::default(), "utf-8"),
        &dir.join("y.tokens"),
        |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("symbols.txt holds no tokens after D2lLines preprocessing"),
        "{err}"
    );
    assert!(!dir.join("x.tokens").exists() && !dir.join("y.tokens").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_epoch_reads_the_mapped_ids_as_the_in_memory_ones() {
    let dir = scratch_dir("prepared-epochs");
    let corpus = prepare(&cases()[7], &dir);
    let memory = rnnlm_data::Tokens::from(corpus.train.to_vec());
    for sampling in [
        Sampling::Random,
        Sampling::Sequential,
        Sampling::Overlapping,
    ] {
        let cfg = BatchConfig {
            batch_size: 16,
            num_steps: 32,
            sampling,
        };
        let mapped = cfg.epoch(&corpus.train, &mut epoch_rng(3, 1)).unwrap();
        let heap = cfg.epoch(&memory, &mut epoch_rng(3, 1)).unwrap();
        assert_eq!(mapped.len(), heap.len());
        for i in [0, 1, mapped.len() / 2, mapped.len() - 1] {
            assert_eq!(mapped.get(i), heap.get(i), "{sampling:?} minibatch {i}");
        }
        assert!(mapped.get(mapped.len()).is_none());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_on_the_fly_permutation_is_a_seeded_bijection() {
    use rnnlm_data::Permutation;
    use std::collections::HashSet;
    for len in [1usize, 2, 3, 5, 16, 17, 100, 1000, 4097] {
        let p = Permutation::new(len, &mut epoch_rng(1, 1));
        let seen: HashSet<usize> = (0..len).map(|i| p.get(i)).collect();
        assert_eq!(seen.len(), len, "every element once for {len}");
        assert!(seen.iter().all(|&x| x < len));
    }
    let order = |seed| {
        let p = Permutation::new(1000, &mut epoch_rng(seed, 1));
        (0..1000).map(|i| p.get(i)).collect::<Vec<_>>()
    };
    assert_eq!(order(4), order(4));
    assert_ne!(order(4), order(5));
    // Shuffled, not a rotation: few elements stay near their place.
    let near = order(4)
        .iter()
        .enumerate()
        .filter(|(i, x)| i.abs_diff(**x) < 10)
        .count();
    assert!(near < 50, "{near} of 1000 stay within 10 places");
}
