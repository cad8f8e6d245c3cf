// The dashboard's vendored libraries, loaded as classic scripts before the modules.
declare const L: any;
declare const uPlot: any;
