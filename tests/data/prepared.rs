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
    let case = |name, train: &[&'static str], valid: &[&'static str], tokenizer, min_freq, max_tokens, valid_fraction| Case {
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
        case("tm-lines-char", &[tm], &[], tok(D2lLines, Char), 0, None, 0.0),
        case("tm-lines-char-valid", &[tm], &[], tok(D2lLines, Char), 0, None, 0.1),
        case("tm-whole-char", &[tm], &[], tok(D2lWhole, Char), 0, None, 0.05),
        case("tm-raw-char", &[tm], &[], tok(Raw, Char), 0, None, 0.1),
        case("tm-lines-word", &[tm], &[], tok(D2lLines, Word), 2, None, 0.1),
        case("tm-raw-word-max", &[tm], &[], tok(Raw, Word), 3, Some(10_000), 0.1),
        case("tm-whole-word", &[tm], &[], tok(D2lWhole, Word), 0, None, 0.0),
        case("ts-raw-char", &[ts], &[], tok(Raw, Char), 0, None, 0.1),
        case("two-books", &[tm, ts], &[], tok(D2lLines, Char), 0, None, 0.1),
        case("valid-file", &[tm], &[ts], tok(Raw, Char), 5, None, 0.3),
        case("max-tokens-two", &[ts, tm], &[], tok(Raw, Char), 0, Some(50_000), 0.2),
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
        meta.update(format!("{}:{}:{}:{};", share.name, share.tokens, share.train, share.valid));
    }
    let ids = |ids: &Tokens| {
        let mut h = Sha1::new();
        for id in ids.iter() {
            h.update(id.to_le_bytes());
        }
        hex(&h.finalize())
    };
    let cfg = BatchConfig { batch_size: 8, num_steps: 20, sampling: Sampling::Sequential };
    let mut h = Sha1::new();
    for b in cfg.epoch(&corpus.train, &mut epoch_rng(7, 2)).unwrap().iter() {
        for r in 0..b.batch_size {
            for t in [b.x_row(r), &b.y_row(r)[19..]].concat() {
                h.update(t.to_le_bytes());
            }
        }
    }
    [hex(&meta.finalize()), ids(&corpus.train), ids(&corpus.valid), hex(&h.finalize())]
}

/// Taken with the in-memory `SplitCorpus` this file replaced (main at 4ccc968).
const GOLDEN: &[(&str, [&str; 4])] = &[
    ("tm-lines-char", ["faf6a4b577922848a6dd6297782ef887c161033b", "cd283b269b12a6e1effe1ed7522d6de851fc4c5b", "da39a3ee5e6b4b0d3255bfef95601890afd80709", "9d72153210e3a78da62b7e79d908f8ce9fd1da6e"]),
    ("tm-lines-char-valid", ["3a1c5a93ee20e1faf1c2895930c0d9984f98ebb7", "6ef3a80d0ed5e09aaf46724553a1c73349163181", "237eaeb9f08cff529581d5f7d6386f3634b10a9c", "51673666cd9afb830efe2c341156d7561759b602"]),
    ("tm-whole-char", ["adce06345b2f48f9d5518fc72a950971b521d330", "89f524fb41a369fe1818108e89fa83e618f44170", "b370854f82e8303c6afe0ab4c2f5b5b693001e96", "ab4c022b239587741030ac12c936a7ea3bb89024"]),
    ("tm-raw-char", ["5da7fe4e1b17bb64405497ebbc1c53673f8db2c5", "33e5ab7011396eca07c153660d55c66624ede049", "18f6ae49098ddd3db47aed5b3aa72c607a721a61", "90b4d5d71fb060eaf5af4f25d941471838c9e84b"]),
    ("tm-lines-word", ["7e68b5ab14833d99264077ab1df3254c0ccdca46", "718d09263ea4b21f348a87654d762bcc6dae8382", "9201d931827343a2d3712740b9a34e7a30aa0705", "56efcda1f0e99613d563e39d3fcdd19b9bb8ecf3"]),
    ("tm-raw-word-max", ["034ea7f1696f47550b9a088fbb764d823074e466", "8c8440fb222478cc2fded3afbedead960814417b", "63801418b26336de2c4e3312628b83bbb892ad91", "2185d450ad55d33e2e2033b2075480f76910d0c3"]),
    ("tm-whole-word", ["82bfb5df2c79e20146e41f5996763b557f73d358", "1f52cac94f559a16ed105e25c3efaa23e49addd3", "da39a3ee5e6b4b0d3255bfef95601890afd80709", "ffc198249caf9fd336614e37708ac11a9ee4d77d"]),
    ("ts-raw-char", ["9f069056ef1e566e858ffa62b6a3d790965b94f6", "e971fb69333ff58f5cdbc5139e57f57114f60b18", "921b8e372b74ad1d3889c84539c9bd2a371da0a0", "4e1d9c686adadc4fdf806a67b9a038b4e49b4662"]),
    ("two-books", ["423939ee3062314d8a9d69b67201ddfb35158366", "998a96751c6a73fa7b614a4e7000da3aaeea97d1", "dc5a02d76ff3d7af7558beb0a98eb9a0c05b9f8c", "df9bbfb3d5abef663a89d6aaee2a573a50cf62f3"]),
    ("valid-file", ["d887e453a6adc82c22a8530457b8cb64f05e5e95", "537b98c5270db6ba85f428da8258289103d27019", "04352d52aeaf7c0db60249db0d70fca1a80b5668", "089a7f91c276cd3fce6b7441f61d685eb1a31ae4"]),
    ("max-tokens-two", ["a3ff6fe34b735f67fb7d8a97a3250d60aefc046b", "3a857ae84adda3da65562dc0dea7f7ef1a2c7912", "09d425756b3e720e6c3318d44900d290939cd3b9", "5641dc2493aec22b8fb5b601a440b5d8c2820b01"]),
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
