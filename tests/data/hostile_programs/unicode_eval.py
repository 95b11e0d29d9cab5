# attack: fullwidth 'ｅｖａｌ' (NFKC-normalised to eval)
# rejected-because: 'eval'
def stage_1(keypoints, trajectory):
    return ｅｖａｌ('1')
