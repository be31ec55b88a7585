# The gap between Sophia and AdamW against the training horizon: `gnuplot docs/study/horizon_gap.gp`
# from the repository root writes docs/study/horizon_gap.png from docs/study/horizon_gap.dat.
set terminal pngcairo size 900,560 font ",11"
set output "docs/study/horizon_gap.png"
set logscale x
set xrange [0.8:600]
set yrange [-0.08:0.36]
set xlabel "training tokens per parameter (log scale)"
set ylabel "final loss: Sophia - AdamW (both tuned)"
set grid
set key top right box opaque
set arrow from 0.8,0 to 600,0 nohead dt 2 lc rgb "gray40"
set label "Sophia better" at 1.0,-0.06 tc rgb "gray40"
set label "AdamW better" at 1.0,0.02 tc rgb "gray40"
# Wen et al.: a band over 20-160 tokens per parameter (block 4 of the data file).
set object 1 rect from 20,-0.004 to 160,0.015 fc rgb "#1f77b4" fs transparent solid 0.3 noborder
f = "docs/study/horizon_gap.dat"
plot f index 0 using 1:2:3:4 with yerrorlines lw 2 pt 7 ps 1.3 lc rgb "#d62728" title "ours: small GPT-2, Sophia-G, 3 seeds (range)", \
     f index 5 using 1:2:3:4 with yerrorlines lw 2 dt 3 pt 6 ps 1.3 lc rgb "#8c564b" title "ours: small GPT-2, Sophia-H, 3 seeds (range)", \
     NaN with boxes fs transparent solid 0.3 noborder lc rgb "#1f77b4" title "Wen et al. 2025: 130M-520M, tuned, -0.004..+0.015", \
     f index 1 using 1:2 with points pt 5 ps 1.6 lc rgb "#2ca02c" title "paper: 125M Sophia-G, 100K steps", \
     f index 3 using 1:2 with points pt 9 ps 1.8 lc rgb "#9467bd" title "paper: 770M Sophia-H, 100K steps", \
     f index 2 using 1:2 with points pt 13 ps 1.6 lc rgb "#ff7f0e" title "Sophia issue #31: 125M rerun, both tuned"
