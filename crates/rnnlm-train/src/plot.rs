//! Perplexity per epoch as an SVG chart, like d2l's animator.

use std::path::Path;

use plotters::prelude::*;

use crate::checkpoint::{EpochMetrics, write_atomic};
use crate::error::TrainError;

/// Draws training (and validation) perplexity against the epoch into `path`.
pub fn plot_perplexity(path: &Path, history: &[EpochMetrics]) -> Result<(), TrainError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 400)).into_drawing_area();
        draw(&root, history).map_err(|e| TrainError::Plot(e.to_string()))?;
        root.present()
            .map_err(|e| TrainError::Plot(e.to_string()))?;
    }
    write_atomic(path, svg.as_bytes()).map_err(|e| TrainError::io(path, e))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    history: &[EpochMetrics],
) -> Result<(), Box<dyn std::error::Error + 'static>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let last = history.last().map_or(1, |m| m.epoch).max(2);
    let all = history
        .iter()
        .flat_map(|m| std::iter::once(m.train_perplexity).chain(m.valid_perplexity))
        .filter(|p| p.is_finite());
    let top = all.fold(1.0f64, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(root)
        .caption("perplexity", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(1usize..last, 1.0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("perplexity")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            history.iter().map(|m| (m.epoch, m.train_perplexity)),
            &BLUE,
        ))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    if history.iter().any(|m| m.valid_perplexity.is_some()) {
        let points = history
            .iter()
            .filter_map(|m| Some((m.epoch, m.valid_perplexity?)));
        chart
            .draw_series(LineSeries::new(points, &RED))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    Ok(())
}
