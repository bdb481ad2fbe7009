# Bar chart of sequential pins per second per client, for make bench.
#   gnuplot -e "datafile='...'; outfile='...'; subtitle='...'" bench/chart.gp
# datafile: lines of "<index> \"<client>\" <pins/s, mock> <pins/s, lean>
# <x raw, mock> <x raw, lean>", NaN where a client has no figure; the ratios
# are the report's (the median of the rounds' ratios, where there were
# rounds).
if (!exists("datafile")) datafile = 'build/bench/pins_per_second.dat'
if (!exists("outfile")) outfile = 'bench/pins_per_second.png'
if (!exists("subtitle")) subtitle = ''
stats datafile using 1 nooutput
xmax = STATS_max

set terminal pngcairo size 1000,560 noenhanced font ",11"
set output outfile
set title "periskope: sequential pins per second, and x the raw C loop (log scale)\n".subtitle
set datafile missing "NaN"
set style fill solid 0.85 border -1
set boxwidth 0.38
set logscale y 10
set yrange [10:*]
set ylabel "pins per second"
set grid ytics
set xtics nomirror
set ytics nomirror
set key top right
set xrange [-0.6:xmax + 0.6]
plot datafile using ($1-0.2):3:xtic(2) with boxes lc rgb "#3a6ea5" title "against the mock (records every pin)", \
     '' using ($1+0.2):4 with boxes lc rgb "#e08a2c" title "against the lean endpoint", \
     '' using ($1-0.2):3:(sprintf("%.0f\n%.2fx", $3, $5)) with labels font ",9" offset 0,1.4 notitle, \
     '' using ($1+0.2):4:(sprintf("%.0f\n%.2fx", $4, $6)) with labels font ",9" offset 0,1.4 notitle
