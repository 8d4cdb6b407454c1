"""Reports: `gdpo compare` (methods x seeds), reading runs, statistics, plots, rendering, and the
collapse table's command line. Edges of the package: they read run folders and write files."""
