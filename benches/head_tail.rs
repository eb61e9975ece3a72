//! Throughput of `HeadTailBuffer::write` into a warm buffer (head full, ring allocated), against a
//! plain copy of the same bytes into a preallocated `Vec` as the baseline.
//!
//! Run: `cargo bench --bench head_tail`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wgagent::proc::head_tail::HeadTailBuffer;

fn write_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("head_tail_write");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    for size in [4 << 10, 64 << 10] {
        // Text-like output: 80-byte lines.
        let chunk: Vec<u8> = (0..size)
            .map(|i| {
                if i % 80 == 79 {
                    b'\n'
                } else {
                    b'a' + (i % 26) as u8
                }
            })
            .collect();
        group.throughput(Throughput::Bytes(size as u64));

        let buf = HeadTailBuffer::new();
        for _ in 0..16 {
            buf.write(&chunk);
        }
        group.bench_with_input(BenchmarkId::new("buffer", size), &chunk, |b, chunk| {
            b.iter(|| buf.write(black_box(chunk)))
        });

        let mut v: Vec<u8> = Vec::with_capacity(size);
        group.bench_with_input(BenchmarkId::new("vec_copy", size), &chunk, |b, chunk| {
            b.iter(|| {
                v.clear();
                v.extend_from_slice(black_box(chunk));
                black_box(&v);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, write_throughput);
criterion_main!(benches);
