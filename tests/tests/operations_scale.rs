//! Operation writes at city scale: with 25,000 segments in the cadastre, creating and
//! changing operations reads only their own segments (the bounding box comes from those
//! segments' stored boxes), and placing a point or an area reads only the segments near
//! it. The figures are printed for the record (run with `--no-capture`); correctness is
//! asserted, time is not.

use std::time::Instant;

use sccr_tests::{TempDir, TestDb};
use store::{
    ActualWindow, ChangeKind, Operation, OperationFilter, OperationKind, OperationSeverity,
    OperationStatus, PlannedWindow, Store, StoreOptions, TimescaleMode,
};
use telemetry::cadastre::geometry::{line_meets_polygon, metres_per_degree};
use telemetry::cadastre::CadastreSegment;
use telemetry::{EventTime, RoadSegment, SegmentId};

const SEGMENTS: usize = 25_000;
const SPACING_M: f64 = 120.0;
const CENTRE: [f64; 2] = [11.2558, 43.7696];
const WRITES: usize = 40;

/// Nodes per side of the grid, and the position of node (i, j).
fn grid() -> (usize, impl Fn(usize, usize) -> [f64; 2]) {
    let mut k = 2usize;
    while 2 * k * (k - 1) < SEGMENTS {
        k += 1;
    }
    let (kx, ky) = metres_per_degree(CENTRE[1]);
    let half = (k as f64 - 1.0) / 2.0;
    let node = move |i: usize, j: usize| {
        [
            CENTRE[0] + (i as f64 - half) * SPACING_M / kx,
            CENTRE[1] + (j as f64 - half) * SPACING_M / ky,
        ]
    };
    (k, node)
}

/// A street grid of [`SEGMENTS`] segments, [`SPACING_M`] apart, around the centre.
fn city() -> Vec<CadastreSegment> {
    let (k, node) = grid();
    let mut out = Vec::with_capacity(SEGMENTS);
    'grid: for line in 0..k {
        for step in 0..k - 1 {
            for (dir, (a, b)) in [
                ("h", (node(step, line), node(step + 1, line))),
                ("v", (node(line, step), node(line, step + 1))),
            ] {
                if out.len() == SEGMENTS {
                    break 'grid;
                }
                out.push(CadastreSegment {
                    segment: RoadSegment {
                        id: SegmentId::parse(&format!("g-{dir}-{line}-{step}")).unwrap(),
                        name: format!("Strada {line}/{step}"),
                        kind: "local".into(),
                        coordinates: vec![a, b],
                        length_m: SPACING_M,
                        lanes: 1,
                        speed_limit_kmh: 50.0,
                        free_flow_kmh: 40.0,
                        capacity_vph: 800.0,
                    },
                    one_way: false,
                });
            }
        }
    }
    out
}

fn operation(id: String, segments: Vec<String>) -> Operation {
    let now = EventTime::now();
    Operation {
        id,
        version: 1,
        kind: OperationKind::Roadworks,
        title: "Works".into(),
        description: None,
        severity: OperationSeverity::Moderate,
        status: OperationStatus::Planned,
        agency: "utilities".into(),
        segments,
        derived_segments: vec![],
        point: None,
        area: None,
        closes_road: false,
        planned: PlannedWindow { from: now, to: EventTime(now.millis() + 3_600_000) },
        actual: ActualWindow::default(),
        notes: vec![],
        linked_alerts: vec![],
        external_ref: None,
        created_at: now,
        created_by: "scale".into(),
        updated_at: now,
        updated_by: "scale".into(),
    }
}

/// Median and largest of a series of durations, ms.
fn summary(ms: &mut [f64]) -> String {
    ms.sort_by(f64::total_cmp);
    format!("p50 {:.2} ms, max {:.2} ms (n = {})", ms[ms.len() / 2], ms[ms.len() - 1], ms.len())
}

async fn timed<T>(ms: &mut Vec<f64>, f: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    ms.push(started.elapsed().as_secs_f64() * 1e3);
    out
}

async fn writes_at_scale(name: &str, store: &Store) {
    let segments = city();
    let started = Instant::now();
    store.import_cadastre(&segments, 30.0, EventTime::now(), false).await.expect("import");
    eprintln!("[{name}] {SEGMENTS} segments imported in {:.1} s", started.elapsed().as_secs_f64());
    let mut read_all = Vec::new();
    for _ in 0..3 {
        let all = timed(&mut read_all, store.segments()).await.expect("segments");
        assert_eq!(all.len(), SEGMENTS);
    }
    eprintln!(
        "[{name}] reading every segment (what each write used to do): {}",
        summary(&mut read_all)
    );

    // Lines 0..100 of the grid are whole (the last ones are cut at 25,000 segments).
    let (_, node) = grid();
    let (mut create, mut patch, mut note, mut point, mut area) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..WRITES {
        // Three segments in a row of line i.
        let line = (i * 37) % 100;
        let ids: Vec<String> = (0..3).map(|s| format!("g-h-{line}-{}", 10 + s)).collect();
        let op = operation(format!("op-scale-{i:03}"), ids);
        timed(&mut create, store.create_operation(&op, None, "d")).await.expect("create");
        let changed = timed(
            &mut patch,
            store.change_operation(
                &op.id,
                Some(1),
                "scale",
                EventTime::now(),
                ChangeKind::Updated,
                |o| {
                    o.severity = OperationSeverity::Major;
                    Ok(())
                },
            ),
        )
        .await
        .expect("patch");
        assert_eq!(changed.version, 2);
        timed(&mut note, store.add_operation_note(&op.id, "scale", "on site", EventTime::now()))
            .await
            .expect("note");
        // The bounding box is the segments': a box around their middle finds the
        // operation, one beside it does not.
        let [a, b] = [node(11, line), node(12, line)];
        let found = |bbox: [f64; 4]| async move {
            let f = OperationFilter { bbox: Some(bbox), limit: 500, ..Default::default() };
            let page = store.operations(&f).await.expect("list");
            page.operations.iter().any(|o| o.id == format!("op-scale-{i:03}"))
        };
        assert!(found([a[0], a[1] - 1e-5, b[0], b[1] + 1e-5]).await);
        let (_, ky) = metres_per_degree(CENTRE[1]);
        let beside = 60.0 / ky;
        assert!(!found([a[0], a[1] + beside, b[0], b[1] + beside + 1e-5]).await);

        // A point 5 m north of a horizontal segment's middle, and a 300 m square.
        let mid = [(a[0] + b[0]) / 2.0, a[1] + 5.0 / ky];
        let mut p = operation(format!("op-scale-p{i:03}"), vec![]);
        p.point = Some(mid);
        timed(&mut point, async {
            store.place_operation(&mut p, 30.0).await.expect("place");
            store.create_operation(&p, None, "d").await.expect("create point")
        })
        .await;
        assert_eq!(p.derived_segments, [format!("g-h-{line}-11")]);
        let (kx, _) = metres_per_degree(CENTRE[1]);
        let (dx, dy) = (150.0 / kx, 150.0 / ky);
        let ring = [
            [mid[0] - dx, mid[1] - dy],
            [mid[0] + dx, mid[1] - dy],
            [mid[0] + dx, mid[1] + dy],
            [mid[0] - dx, mid[1] + dy],
            [mid[0] - dx, mid[1] - dy],
        ];
        let mut q = operation(format!("op-scale-a{i:03}"), vec![]);
        q.area = Some(serde_json::json!({"type": "Polygon", "coordinates": [ring]}));
        timed(&mut area, async {
            store.place_operation(&mut q, 30.0).await.expect("place");
            store.create_operation(&q, None, "d").await.expect("create area")
        })
        .await;
        // Exactly the segments a scan of the whole cadastre finds in the square.
        let rings = vec![ring.to_vec()];
        let mut expected: Vec<String> = segments
            .iter()
            .filter(|s| line_meets_polygon(&s.segment.coordinates, &rings))
            .map(|s| s.segment.id.as_str().to_owned())
            .collect();
        expected.sort();
        assert!(expected.len() >= 10, "{expected:?}");
        assert_eq!(q.derived_segments, expected);
    }
    // An area reaching into more than 500 segments (3 km square) is refused, naming it.
    let (kx, ky) = metres_per_degree(CENTRE[1]);
    let (dx, dy) = (1_500.0 / kx, 1_500.0 / ky);
    let [x, y] = CENTRE;
    let ring =
        [[x - dx, y - dy], [x + dx, y - dy], [x + dx, y + dy], [x - dx, y + dy], [x - dx, y - dy]];
    let mut big = operation("op-scale-big".into(), vec![]);
    big.area = Some(serde_json::json!({"type": "Polygon", "coordinates": [ring]}));
    match store.place_operation(&mut big, 30.0).await {
        Err(store::StoreError::OperationInvalid { field, message }) => {
            assert_eq!(field, "area", "{message}");
            assert!(message.contains("at most 500"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    eprintln!("[{name}] create on 3 segments: {}", summary(&mut create));
    eprintln!("[{name}] change (If-Match): {}", summary(&mut patch));
    eprintln!("[{name}] note: {}", summary(&mut note));
    eprintln!("[{name}] place a point and create: {}", summary(&mut point));
    eprintln!("[{name}] place a 300 m area and create: {}", summary(&mut area));
}

#[tokio::test]
async fn operation_writes_read_only_their_segments_at_25k_segments_on_sqlite() {
    let dir = TempDir::new("operations-scale").expect("tempdir");
    let url = format!("sqlite:{}", dir.path.join("sccr.db").display());
    let store = Store::connect(&url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    writes_at_scale("sqlite", &store).await;
}

#[tokio::test]
async fn operation_writes_read_only_their_segments_at_25k_segments_on_postgres() {
    let db = TestDb::create().await.expect("database");
    let options = StoreOptions { timescaledb: TimescaleMode::Off, ..StoreOptions::default() };
    let store = Store::connect(&db.url, &options).await.expect("store");
    store.migrate().await.expect("migrate");
    writes_at_scale("postgres", &store).await;
}
