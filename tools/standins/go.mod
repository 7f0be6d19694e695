module neurallog.io/tools/standins

go 1.24
