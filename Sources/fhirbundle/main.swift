print("fhirbundle")
