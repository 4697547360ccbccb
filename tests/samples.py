"""Source text of small user-code samples, shared by tests that write plugins and layer files."""

SOFTMAX = '''
def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_vjp(x, g):
    y = softmax(x)
    return y * (g - (y * g).sum(axis=-1, keepdims=True))
'''

MSE = '''
def mse(pred, target):
    return np.mean((pred - target) ** 2, axis=(-2, -1))


def mse_grad(pred, target):
    return 2.0 * (pred - target) / pred.size
'''
