# test/demo/plot.gp: the picture of the burst demo, both runs over time.
# Called by burst.sh with: direct, buffered (the runs' file prefixes), png
# (the file to write), duration, workers, pool, clients, rate, timeout.
# Files read per run: PREFIX-seconds.csv (the clients' view, per second),
# PREFIX-samples.csv (the sampler's rows), PREFIX-processed.csv (orders
# committed per second, from the orders table).

set terminal pngcairo size 1000,1150 font "sans,10"
set output png
set datafile separator ","
set datafile missing ""
set grid
set yrange [0:*]
set key top right opaque
set xlabel ""
set style line 1 lc rgb "#d62728" lw 2
set style line 2 lc rgb "#1f77b4" lw 2
set style line 3 lc rgb "#d62728" lw 1 dt 2
set style line 4 lc rgb "#1f77b4" lw 1 dt 2
set style line 5 lc rgb "#555555" lw 1 dt 3
set arrow 1 from duration, graph 0 to duration, graph 1 nohead lc rgb "#999999" dt 3

set multiplot layout 4,1 title sprintf("queue demo: %d clients x %g requests/s for %gs through PgBouncer (pool %d); time in seconds from the start of the burst", clients, rate, duration, pool)

set ylabel "requests/s"
set title sprintf("answers per second: accepted (solid); turned away (dashed): failed, or given up when the client's patience (%gs) ran out", timeout)
plot direct."-seconds.csv" skip 1 using 1:2 with lines ls 1 title "direct", \
     buffered."-seconds.csv" skip 1 using 1:2 with lines ls 2 title "buffered", \
     direct."-seconds.csv" skip 1 using 1:($3+$4+$5) with lines ls 3 title "direct: turned away", \
     buffered."-seconds.csv" skip 1 using 1:($3+$4+$5) with lines ls 4 title "buffered: turned away"

set ylabel "backends"
set title "backends processing orders (sampled): client transactions vs drain workers in the handler"
plot direct."-samples.csv" skip 1 using 1:2 with steps ls 1 title "direct", \
     buffered."-samples.csv" skip 1 using 1:2 with steps ls 2 title "buffered", \
     workers with lines ls 5 title sprintf("consumer cap (%d)", workers)

set ylabel "messages"
set title "queue depth: accepted requests waiting for a worker"
plot direct."-samples.csv" skip 1 using 1:5 with lines ls 1 title "direct", \
     buffered."-samples.csv" skip 1 using 1:5 with lines ls 2 title "buffered"

set ylabel "orders/s"
set key top left
set title "orders processed (committed) per second"
set xlabel "seconds from the start of the burst"
plot direct."-processed.csv" skip 1 using 1:2 with steps ls 1 title "direct", \
     buffered."-processed.csv" skip 1 using 1:2 with steps ls 2 title "buffered"

unset multiplot
