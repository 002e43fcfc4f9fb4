"""SGD family (NumPy). Mirrors csrc/fd_sgd.c and backends/*/sgd.py."""



def sgd(tab, *, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    tab.require("sgd", momentum != 0 and "momentum_buffer")  # ValueError naming a missing column
    params, grads, bufs = tab.columns["param"], tab.columns["grad"], tab.columns.get("momentum_buffer")
    for i in range(tab.n):
        p, g = params[i], grads[i]
        g = -g if maximize else g.copy()
        if weight_decay != 0:
            g += weight_decay * p
        if momentum != 0:
            b = bufs[i]
            if first_step:
                b[...] = g
            else:
                b *= momentum
                b += (1 - dampening) * g
            if nesterov:
                g += momentum * b
            else:
                g = b
        p -= lr * g
