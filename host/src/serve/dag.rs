//! A workflow's DAG drawn as SVG for the viewer: steps in columns by depth
//! (a step sits right of everything it depends on), an arrow per
//! dependency. Hand-written: a few dozen boxes and lines need no library.

use crate::workflow::{StepKind, StepSpec, Workflow};
use maud::{Markup, html};
use std::collections::BTreeMap;

const BOX_W: f64 = 170.0;
const BOX_H: f64 = 28.0;
const GAP_X: f64 = 56.0;
const GAP_Y: f64 = 14.0;

/// The SVG of `wf`'s steps and dependencies.
pub fn svg(wf: &Workflow) -> Markup {
    // Depth: 0 without dependencies, else one more than the deepest one.
    // Definitions are checked acyclic, so this terminates; the bound on
    // rounds is only a guard.
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    let steps: Vec<&StepSpec> = wf.outer_steps().collect();
    for _ in 0..=steps.len() {
        for step in &steps {
            let d = wf
                .outer_dependencies(step)
                .iter()
                .map(|dep| depth.get(dep).map_or(0, |d| d + 1))
                .max()
                .unwrap_or(0);
            depth.insert(&step.name, d);
        }
    }
    let mut rows_in: BTreeMap<usize, usize> = BTreeMap::new();
    let mut at: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for step in &steps {
        let column = depth.get(step.name.as_str()).copied().unwrap_or(0);
        let row = rows_in.entry(column).or_insert(0);
        let xy = (
            column as f64 * (BOX_W + GAP_X) + 4.0,
            *row as f64 * (BOX_H + GAP_Y) + 4.0,
        );
        at.insert(&step.name, xy);
        *row += 1;
    }
    let width = at.values().map(|(x, _)| x + BOX_W).fold(0.0, f64::max) + 8.0;
    let height = at.values().map(|(_, y)| y + BOX_H).fold(0.0, f64::max) + 8.0;
    html! {
        svg.dag xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox={ "0 0 " (width) " " (height) } data-workflow=(wf.name) {
            defs {
                marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" markerHeight="8" orient="auto" {
                    path d="M0,0 L8,4 L0,8 z" fill="#7a8599" {}
                }
            }
            @for step in &steps {
                @for dep in wf.outer_dependencies(step) {
                    @if let (Some((x1, y1)), Some((x2, y2))) = (at.get(dep), at.get(step.name.as_str())) {
                        @let (sx, sy, ex, ey) = (x1 + BOX_W, y1 + BOX_H / 2.0, *x2, y2 + BOX_H / 2.0);
                        path.edge data-from=(dep) data-to=(step.name) fill="none" stroke="#7a8599"
                            marker-end="url(#arrow)"
                            d={ "M" (sx) "," (sy) " C" (sx + GAP_X / 2.0) "," (sy) " " (ex - GAP_X / 2.0) "," (ey) " " (ex) "," (ey) } {}
                    }
                }
            }
            @for step in &steps {
                @if let Some((x, y)) = at.get(step.name.as_str()) {
                    // A map is a stacked box; a step with a condition is dashed.
                    g.node data-step=(step.name) data-map[step.map.is_some()] data-when=[step.when.as_ref().map(ToString::to_string)] {
                        @if let Some(when) = &step.when { title { "when " (when.to_string()) } }
                        @if step.map.is_some() {
                            rect x=(x + 4.0) y=(y - 4.0) width=(BOX_W) height=(BOX_H) rx="4" fill="#eef3fb" stroke="#9fb3d1" {}
                        }
                        rect x=(x) y=(y) width=(BOX_W) height=(BOX_H) rx="4" fill="#eef3fb" stroke="#9fb3d1"
                            stroke-dasharray=[step.when.as_ref().map(|_| "4 3")] {}
                        @if let StepKind::Compose { workflow, .. } = &step.kind {
                            a href={ "/ui/workflows#workflow-" (workflow) } data-composes=(workflow) {
                                text x=(x + 8.0) y=(y + 18.0) font-size="13" {
                                    (step.name) " [" (workflow) "]"
                                }
                            }
                        } @else {
                            text x=(x + 8.0) y=(y + 18.0) font-size="13" {
                                (step.name) @if step.map.is_some() { " [map]" }
                            }
                        }
                    }
                }
            }
        }
    }
}
