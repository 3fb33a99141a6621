//! From an experiment's `[data]` to a prepared corpus: the sources it names, where their
//! prepared token file lives, and the progress of making it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rnnlm_data::{
    CorpusSpec, Preparation, PrepareProgress, PreparedCorpus, RemoteFile, SourceFile,
};

use crate::error::TrainError;
use crate::experiment::ExperimentConfig;

/// The corpus files and options an experiment names. The Time Machine is fetched into
/// `cache_dir` (or the default cache) first.
pub fn corpus_spec(
    config: &ExperimentConfig,
    cache_dir: Option<&Path>,
) -> Result<CorpusSpec, TrainError> {
    let data = &config.data;
    let sources = data.sources();
    // Checked here, after --data: a command line may name the corpus the config leaves out.
    if !data.valid_files.is_empty() && sources.is_empty() {
        return Err(TrainError::Invalid {
            field: "data.valid_files".to_owned(),
            value: format!("{:?}", data.valid_files),
            expected: "needs data.file, data.files or --data (The Time Machine keeps its own \
                       validation part)"
                .to_owned(),
        });
    }
    let files = |paths: &[PathBuf]| -> Result<Vec<SourceFile>, TrainError> {
        Ok(rnnlm_data::text_files(paths)?
            .into_iter()
            .map(SourceFile::new)
            .collect())
    };
    let train = if sources.is_empty() {
        vec![SourceFile {
            name: "The Time Machine".to_owned(),
            path: RemoteFile::time_machine().fetch(&cache(cache_dir)?)?,
        }]
    } else {
        files(&sources)?
    };
    Ok(CorpusSpec {
        train,
        valid: files(&data.valid_files)?,
        tokenizer: data.tokenizer(),
        encoding: data.encoding.clone(),
        min_freq: data.min_freq,
        max_tokens: (data.max_tokens > 0).then_some(data.max_tokens),
        valid_fraction: data.valid_fraction,
        vocab: None,
    })
}

/// Where the prepared file of `spec` goes: `data.prepared` when the experiment names one, else
/// `<cache>/prepared/<first file>-<hash of the files and options>.tokens`.
pub fn prepared_path(
    config: &ExperimentConfig,
    spec: &CorpusSpec,
    cache_dir: Option<&Path>,
) -> Result<PathBuf, TrainError> {
    if let Some(path) = &config.data.prepared {
        return Ok(path.clone());
    }
    cached_path(spec, cache_dir)
}

/// `cache_dir`, else the default cache directory ([`rnnlm_data::default_cache_dir`]).
fn cache(cache_dir: Option<&Path>) -> Result<PathBuf, TrainError> {
    Ok(match cache_dir {
        Some(dir) => dir.to_owned(),
        None => rnnlm_data::default_cache_dir()?,
    })
}

/// Where `spec`'s prepared file goes in the cache: `<cache>/prepared/<first file>-<hash of the
/// files and options>.tokens`.
pub(crate) fn cached_path(
    spec: &CorpusSpec,
    cache_dir: Option<&Path>,
) -> Result<PathBuf, TrainError> {
    Ok(cache(cache_dir)?.join("prepared").join(spec.file_name()?))
}

/// [`PreparedCorpus::load_or_prepare`], showing its progress on stderr when `show` (an
/// updating line on a terminal, else a line every 10 seconds).
pub(crate) fn load_showing(
    spec: &CorpusSpec,
    path: &Path,
    show: bool,
) -> Result<(PreparedCorpus, Preparation), TrainError> {
    let mut meter = PrepareMeter::new(std::io::stderr().is_terminal());
    let loaded = PreparedCorpus::load_or_prepare(spec, path, |p| {
        if show {
            meter.update(p)
        }
    })?;
    meter.finish();
    Ok(loaded)
}

/// The experiment's corpus, prepared (or reused) and mapped, with what was done, saying so on
/// stdout and showing progress on stderr while a corpus is prepared: an updating line on a
/// terminal, else a line every 10 seconds.
pub fn prepare_corpus(
    config: &ExperimentConfig,
    cache_dir: Option<&Path>,
) -> Result<(PreparedCorpus, Preparation), TrainError> {
    prepare_corpus_saying(config, cache_dir, true)
}

/// [`prepare_corpus`], silent unless `say` (the ranks of a run but the first).
pub(crate) fn prepare_corpus_saying(
    config: &ExperimentConfig,
    cache_dir: Option<&Path>,
    say: bool,
) -> Result<(PreparedCorpus, Preparation), TrainError> {
    let spec = corpus_spec(config, cache_dir)?;
    let path = prepared_path(config, &spec, cache_dir)?;
    let started = Instant::now();
    let (corpus, how) = load_showing(&spec, &path, say)?;
    if !say {
        return Ok((corpus, how));
    }
    let seconds = started.elapsed().as_secs_f64();
    match &how {
        Preparation::Reused => println!("data: reusing {}", path.display()),
        built => {
            let bytes: u64 = spec
                .train
                .iter()
                .chain(&spec.valid)
                .filter_map(|f| std::fs::metadata(&f.path).ok())
                .map(|m| m.len())
                .sum();
            let why = match built {
                Preparation::Rebuilt(reason) => {
                    format!(" (the one there could not serve: {reason})")
                }
                _ => String::new(),
            };
            println!(
                "data: prepared {} in {seconds:.1} s, {:.0} MB/s{why}",
                path.display(),
                bytes as f64 / 1e6 / seconds.max(1e-9),
            );
        }
    }
    Ok((corpus, how))
}

/// Progress of a preparation as text: `preparing: 412/2048 MB (pass 1 of 2), 180 MB/s, ETA 9 s`.
pub struct PrepareMeter {
    terminal: bool,
    started: Instant,
    last: Option<Instant>,
    shown: bool,
}

impl PrepareMeter {
    /// A meter writing to stderr: in place on a terminal, a line every 10 s elsewhere.
    pub fn new(terminal: bool) -> Self {
        Self {
            terminal,
            started: Instant::now(),
            last: None,
            shown: false,
        }
    }

    /// Shows `progress` if it is time to.
    pub fn update(&mut self, progress: PrepareProgress) {
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        let now = Instant::now();
        // Nothing for the first second: small corpora prepare without a word.
        if now - self.started < Duration::from_secs(1) || self.last.is_some_and(|t| now - t < every)
        {
            return;
        }
        self.last = Some(now);
        self.shown = true;
        let line = format_prepare(progress, (now - self.started).as_secs_f64());
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    /// Ends the in-place line, if one was shown.
    pub fn finish(&mut self) {
        if self.terminal && self.shown {
            eprintln!();
        }
    }
}

/// `preparing: 412/2048 MB read (pass 1 of 2), 90 MB/s of corpus, ETA 18 s`: the bytes both
/// passes read, and the corpus's size over the time so far as if both passes were done.
pub fn format_prepare(progress: PrepareProgress, seconds: f64) -> String {
    let read_rate = progress.done as f64 / seconds.max(1e-9);
    let left = progress.total.saturating_sub(progress.done) as f64 / read_rate.max(1.0);
    format!(
        "preparing: {:.0}/{:.0} MB read (pass {} of 2), {:.0} MB/s of corpus, ETA {}",
        progress.done as f64 / 1e6,
        progress.total as f64 / 1e6,
        progress.pass,
        read_rate / 2.0 / 1e6,
        crate::report::format_duration(left)
    )
}
