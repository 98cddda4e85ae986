"""Experiment: the cost of FFmpeg's RGB -> YUV 4:2:0 conversion in x264 encoding of 720p frames (run from the repo root)."""
import time, numpy as np, av, io
from PIL import Image
img = np.asarray(Image.open("docs/demo.jpg").convert("RGB").resize((1280, 720)))
frames = [np.ascontiguousarray(np.roll(img, 8 * i, axis=1)) for i in range(60)]
t = time.perf_counter()
for f in frames:
    vf = av.VideoFrame.from_ndarray(f, format="rgb24")
t_from = (time.perf_counter() - t) / len(frames)
t = time.perf_counter()
for f in frames:
    y = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")
t_ref = (time.perf_counter() - t) / len(frames)
yuv = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray() for f in frames]
t = time.perf_counter()
for a in yuv:
    av.VideoFrame.from_ndarray(a, format="yuv420p")
t_fromyuv = (time.perf_counter() - t) / len(frames)
def enc(fmt, data):
    buf = io.BytesIO(); out = av.open(buf, "w", format="mp4")
    v = out.add_stream("libx264", rate=30, options={"crf": "18", "preset": "veryfast"}); v.width, v.height, v.pix_fmt = 1280, 720, "yuv420p"
    t = time.perf_counter()
    for a in data:
        out.mux(v.encode(av.VideoFrame.from_ndarray(a, format=fmt)))
    out.mux(v.encode(None)); out.close()
    return (time.perf_counter() - t) / len(data)
print(f"from_ndarray rgb {t_from*1e3:.2f} ms, +reformat yuv420p {t_ref*1e3:.2f} ms, from_ndarray yuv {t_fromyuv*1e3:.2f} ms")
print(f"encode from rgb24 {enc('rgb24', frames)*1e3:.2f} ms/frame, from yuv420p {enc('yuv420p', yuv)*1e3:.2f} ms/frame")
