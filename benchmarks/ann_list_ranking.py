"""How IVF ranks its lists for text queries on the hard clouds: how many of the true top-10 lie in the
``nprobe`` best-ranked lists (and the share of rows those lists hold) when lists are ranked by inner product,
cosine, L2, or inner product plus a multiple of the list's spread (a query-adaptive bound). Not a product
path: a measurement behind docs/benchmarks.md ("Which index meets the target").

    OMP_NUM_THREADS=1 python benchmarks/ann_list_ranking.py 100000 /tmp/ann-h/hard-100000-ivf-old.ann

(ROWS of the collection ann_recall_target.py built, and a copy of an IVF index file of it.)
"""

# ruff: noqa
import sys, time, numpy as np, faiss

sys.path.insert(0, "/work/wt-ann/benchmarks")
sys.path.insert(0, "/work/wt-ann/src")
from ann_clouds import HardCloud
from vitrina import open_collection
from vitrina.index.ann import read_ann

rows = int(sys.argv[1])
old = sys.argv[2]
store = open_collection(f"/tmp/vitrina-bench-recall/hard-{rows}")._store
sp = store.space("bench")
data = np.ascontiguousarray(store.space_view("bench").vectors(sp)[: sp.rows], np.float32)
stamp, index = read_ann(old)
ivf = faiss.extract_index_ivf(index)
nlist = ivf.nlist
C = ivf.quantizer.reconstruct_n(0, nlist)
assign = np.empty(len(data), np.int64)
for s in range(0, len(data), 50000):
    assign[s : s + 50000] = np.argmax(data[s : s + 50000] @ C.T, 1)
cloud = HardCloud(512)
Q = cloud.texts(200, seed=7)
S = Q @ data.T
truth = np.argpartition(-S, 10, axis=1)[:, :10]
tl = assign[truth]  # lists of true nbrs
cn = np.linalg.norm(C, axis=1)
sizes = np.bincount(assign, minlength=nlist)
# spread per list: rms distance to centroid
r = np.zeros(nlist)
d2 = ((data - C[assign]) ** 2).sum(1)
r = np.sqrt(np.bincount(assign, weights=d2, minlength=nlist) / np.maximum(sizes, 1))
mx = np.zeros(nlist)
np.maximum.at(mx, assign, np.sqrt(d2))
qc = Q @ C.T


def evaluate(score, name):
    order = np.argsort(-score, 1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(nlist)[None].repeat(len(Q), 0), 1)
    tr = np.take_along_axis(rank, tl, 1)
    out = []
    for npb in (32, 64, 128, 256, 384, 512, 768):
        if npb > nlist:
            break
        rec = (tr < npb).mean()
        scanned = np.take_along_axis(sizes[None].repeat(len(Q), 0), order[:, :npb], 1).sum(1).mean() / len(data)
        out.append(f"{npb}:{rec:.3f}/{scanned:.2f}")
    print(name.ljust(18), " ".join(out), flush=True)


evaluate(qc, "ip")
evaluate(qc / cn, "cos")
evaluate(2 * qc - cn**2, "l2")
qn = np.linalg.norm(Q, axis=1, keepdims=True)
for b in (0.25, 0.5, 1.0, 1.5):
    evaluate(qc + b * r[None], f"ip+{b}r")
for b in (0.25, 0.5, 1.0):
    evaluate(qc + b * mx[None], f"ip+{b}max")
