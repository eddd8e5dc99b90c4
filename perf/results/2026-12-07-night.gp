# ckpt-perf report chart; run from this folder: gnuplot 2026-12-07-night.gp
if (!exists("term")) term = 'svg'
if (term eq 'svg') set terminal svg size 1200,540 dynamic font 'Helvetica,13' background rgb 'white'; else set terminal pngcairo size 1200,540 font 'Helvetica,11'
if (!exists("out")) out = '2026-12-07-night.svg'
set output out
set multiplot layout 1,2 title "ckpt-perf 2026-12-07 - 2 cores, AMD EPYC, kernel 6.18.44-fc-v1300, ext4 at /work/perfdir/r; median of 5 run(s); load avg 0.2 -> 1.9"
set style fill solid 0.85 border -1
set boxwidth 0.19
set grid ytics
set key top right
set yrange [0:*]
set title 'Throughput vs the raw device (same bytes, same run)'
set ylabel 'GiB/s'
set xrange [-0.6:3.6]
set xtics ("dense" 0, "sparse" 1, "small" 2, "bf16" 3)
set offsets 0,0,graph 0.12,0
plot '2026-12-07-night.dat' index 0 with boxes lc rgb '#1f77b4' title 'save', '' index 1 with boxes lc rgb '#aec7e8' title 'raw write', '' index 2 with boxes lc rgb '#d62728' title 'load', '' index 3 with boxes lc rgb '#ff9896' title 'raw read', for [i=0:3] '' index i using 1:2:(sprintf('%.2f',$2)) with labels offset 0,0.6 font ',9' notitle
set title 'Checkpoint stall of the training loop vs a memcpy of the tree'
set ylabel 'ms (log scale)'
set logscale y
set yrange [0.5:*]
set boxwidth 0.19
set offsets 0,0,graph 0.08,0
set xrange [-0.6:1.6]
set xtics ("borrowed leaves" 0, "shared leaves" 1)
set arrow from -0.45,157.7 to 0.45,157.7 nohead lw 2 dt 2 lc rgb '#d62728' front
set label 'target 1.2 x memcpy' at -0.44,212.895 font ',10' tc rgb '#d62728' front
set arrow from 0.55,2 to 1.45,2 nohead lw 2 dt 2 lc rgb '#d62728' front
set label 'target 2 ms' at 0.56,2.7 font ',10' tc rgb '#d62728' front
plot '2026-12-07-night.dat' index 4 with boxes lc rgb '#2ca02c' title 'stall (median)', '' index 5 with boxes lc rgb '#98df8a' title 'stall (max)', '' index 6 with boxes lc rgb '#9467bd' title 'capture CPU-ms / encoder threads', '' index 7 with boxes lc rgb '#7f7f7f' title 'memcpy of the tree (1 thread)', for [i=4:7] '' index i using 1:2:(sprintf('%.1f',$2)) with labels offset 0,0.6 font ',9' notitle
unset multiplot
